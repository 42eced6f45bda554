# 127.0.0.1:5999/runwright-test/busybox:1 — built by scripts/test-images. The context holds rootfs/: Debian's
# busybox-static as /bin/busybox, /etc/passwd and /etc/group (root, nobody), /root, /tmp (1777).
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
