# Switchyard container image.
#
#   podman build --pull=never -t switchyard .        (or docker build)
#   docker run --rm IMAGE --check-config               validates the default config
#   docker run --read-only --user 65532:65532 -v $PWD/conf:/etc/switchyard:ro IMAGE
#
# Stage 1 builds the binary with the same CMake build as the README; stage 2 is
# bookworm-slim with only the shared libraries the binary links (found from its
# NEEDED entries, so the list follows the build), ca-certificates, the binary
# and the default configuration. The process runs as uid/gid 65532, writes
# nothing to the root filesystem and listens on unprivileged ports only.

FROM debian:bookworm-slim AS build
# The -dev packages of scripts/deps.sh (the build part), without the test tools.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        gcc libc6-dev make cmake pkg-config binutils \
        libuv1-dev libssl-dev libhiredis-dev libpq-dev libjansson-dev \
        libhttp-parser-dev libcurl4-openssl-dev libyaml-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the CMake project reads, so that edits elsewhere (docs, chart,
# tests) keep this layer cached.
COPY CMakeLists.txt ./
COPY include/ include/
COPY src/ src/
COPY bench/ bench/
COPY tests/store/ tests/store/
COPY tests/k8s/ tests/k8s/
COPY tests/toml/ tests/toml/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null \
 && cmake --build build -j"$(nproc)" --target switchyard \
 && mkdir -p /out/etc/switchyard \
 && install -m 0755 -s build/switchyard /out/switchyard \
 # The Debian package of every shared library the binary needs directly.
 && for lib in $(readelf -d build/switchyard | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do \
        dpkg -S "*/$lib" | sed -n '1s/:.*//p'; \
    done | sort -u >/out/runtime-packages \
 && test -s /out/runtime-packages \
 # A random token per build, so the default configuration validates; any
 # configuration directory mounted over /etc/switchyard hides it.
 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >/out/etc/switchyard/admin.token

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/switchyard-mail/switchyard
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Multi-protocol e-mail routing proxy (IMAP, POP3, ManageSieve, submission, SMTP/LMTP, HTTP/JMAP)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="NOASSERTION" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
COPY --from=build /out/runtime-packages /usr/share/switchyard/runtime-packages
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates $(cat /usr/share/switchyard/runtime-packages) >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 65532 -K SYS_GID_MAX=65532 switchyard \
 && useradd --system --uid 65532 --gid 65532 -K SYS_UID_MAX=65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin switchyard
COPY --from=build /out/switchyard /usr/local/bin/switchyard
COPY examples/ /usr/share/switchyard/examples/
COPY examples/container.toml /etc/switchyard/switchyard.toml
COPY examples/container-mappings.tsv /etc/switchyard/mappings.tsv
COPY --from=build --chown=0:65532 --chmod=0440 /out/etc/switchyard/admin.token /etc/switchyard/admin.token
USER 65532:65532
WORKDIR /
# Mail listeners (imap, imaps, pop3, pop3s, submission, submissions,
# managesieve, https) and the management side port.
EXPOSE 1143 1993 1110 1995 1587 1465 4190 8443 9443
# The configuration path when none is given, so that both `IMAGE` and
# `IMAGE --check-config` use /etc/switchyard/switchyard.toml.
ENV PROXY_CONFIG=/etc/switchyard/switchyard.toml
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
