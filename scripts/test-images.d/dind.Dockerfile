# 127.0.0.1:5999/runwright-test/dind:1 — built by scripts/test-images, which assembles rootfs/ from the host's
# Debian packages (docker.io, containerd, runc, tini, iptables, openssl, busybox-static) and the shared libraries
# ldd lists for each; see the script for the list and dind/dockerd-entrypoint.sh for the entrypoint.
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV DOCKER_TLS_CERTDIR=/certs
EXPOSE 2375 2376
ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]
CMD []
