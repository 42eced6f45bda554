//! Throughput of the trace path on a job that prints a lot.
//!
//! A job may print gigabytes; everything it prints goes through the masking chain (and, with a
//! journal sink, past the output limit). This pushes `RUNWRIGHT_BENCH_MIB` MiB (default 1024) of
//! log-like text with secrets sprinkled in through the [`Masker`] and through a [`TraceBuffer`]
//! teeing into a sink (without and with `FF_TIMESTAMPS`), and reports MiB/s. Run with `cargo bench -p runwright-trace`.

use std::time::Instant;

use runwright_trace::{Masker, TraceBuffer, TraceOptions};

fn main() {
    let mib: usize = std::env::var(runwright_static::env_vars::RUNWRIGHT_BENCH_MIB)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let secrets: Vec<String> = (0..20)
        .map(|i| format!("s3cr3t-value-{i:02}-xyzzy"))
        .collect();
    let mut line = String::new();
    for i in 0..64 {
        line.push_str(&format!(
            "[{i:04}] Compiling crate-{i} v0.{i}.0 (/builds/group/project) s3cr3t-v \
             https://gitlab.example.com/api/v4/projects?page={i}&per_page=20\n"
        ));
        if i % 16 == 0 {
            line.push_str(&format!(
                "export TOKEN={} glpat-abcdefgh{i}\n",
                secrets[i % 20]
            ));
        }
    }
    let chunk: Vec<u8> = line.bytes().cycle().take(64 * 1024).collect();
    let total = mib * 1024 * 1024;
    let rounds = total / chunk.len();

    for (name, sec) in [("no phrases", Vec::new()), ("phrases", secrets.clone())] {
        let mut masker = Masker::new(&sec, &[]);
        let mut out = Vec::with_capacity(chunk.len() * 2);
        let start = Instant::now();
        for _ in 0..rounds {
            out.clear();
            masker.write_into(&chunk, &mut out);
        }
        report(name, total, 0, start);
    }
    let mut masker = Masker::new(&secrets, &[]);
    let mut out = Vec::with_capacity(chunk.len() * 2);
    let mut produced = 0usize;
    let start = Instant::now();
    for _ in 0..rounds {
        out.clear();
        masker.write_into(&chunk, &mut out);
        produced += out.len();
    }
    produced += masker.flush().len();
    report("Masker", total, produced, start);

    let trace = TraceBuffer::new(TraceOptions {
        masked: secrets.clone(),
        ..TraceOptions::default()
    });
    trace.set_sink(Box::new(std::io::sink()));
    let start = Instant::now();
    for _ in 0..rounds {
        trace.write(&chunk);
    }
    trace.finish();
    report("TraceBuffer+sink", total, trace.len() as usize, start);

    // The service's default: FF_TIMESTAMPS on, the job's output on its own stream.
    let trace = TraceBuffer::new(TraceOptions {
        masked: secrets.clone(),
        timestamps: true,
        ..TraceOptions::default()
    });
    trace.set_sink(Box::new(std::io::sink()));
    let stream = trace.stream(
        runwright_trace::timestamp::STREAM_WORK,
        runwright_trace::StreamType::Stdout,
    );
    let start = Instant::now();
    for _ in 0..rounds {
        stream.write(&chunk);
    }
    drop(stream);
    trace.finish();
    report("+timestamps", total, trace.len() as usize, start);
}

#[allow(clippy::print_stdout)]
fn report(what: &str, input: usize, output: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    let mib = input as f64 / (1024.0 * 1024.0);
    println!(
        "{what:>18}: {mib:.0} MiB in {secs:.2}s = {:.0} MiB/s (output {output} bytes)",
        mib / secs
    );
}
