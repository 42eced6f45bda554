# 127.0.0.1:5999/runwright-test/noshell:1 — built by scripts/test-images: one static file, no shell, no binaries.
FROM scratch
COPY hello /hello
