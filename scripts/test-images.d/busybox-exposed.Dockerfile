# 127.0.0.1:5999/runwright-test/busybox-exposed:1 — built by scripts/test-images: a service container that answers
# HTTP on 8080 with "hello from service" (busybox httpd, in the foreground).
FROM 127.0.0.1:5999/runwright-test/busybox:1
RUN mkdir -p /www && echo 'hello from service' > /www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
