# regcache container image.
#
# No base image is pulled: the final (and only) stage is FROM scratch and
# copies what `make image` stages in bin/image-context from this checkout:
#   regcache                           static binary (CGO_ENABLED=0, -trimpath)
#   etc/ssl/certs/ca-certificates.crt  CA bundle, for HTTPS upstreams
#   etc/passwd, etc/group              root and the non-root user regcache (65532)
#   var/lib/regcache/                  the data directory (a volume)
#
# Build with `make image` (tag regcache:dev; IMAGE=... for another), which runs
#   docker build -t regcache:dev -f Dockerfile bin/image-context
FROM scratch

COPY etc/passwd etc/group /etc/
COPY etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY regcache /usr/local/bin/regcache
# The data directory belongs to the non-root user; declared as a volume below
# so that blobs and metadata live outside the (read-only) root filesystem.
COPY --chown=65532:65532 var/lib/regcache /var/lib/regcache

# The data directory is the volume. regcache listens on its default, :5000;
# a mounted config file (REGCACHE_CONFIG) may set listen. Environment
# variables beat the config file, so dataDir is set with -e
# REGCACHE_DATA_DIR=... or --data-dir, not in the file.
ENV REGCACHE_DATA_DIR=/var/lib/regcache \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

USER 65532:65532
EXPOSE 5000
VOLUME ["/var/lib/regcache"]

LABEL org.opencontainers.image.title="regcache" \
      org.opencontainers.image.description="Pull-through caching OCI registry" \
      org.opencontainers.image.source="https://github.com/regcache/regcache"

ENTRYPOINT ["/usr/local/bin/regcache"]
CMD ["serve"]
