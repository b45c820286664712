# syntax=docker/dockerfile:1
# condaproxy's image: a wheel built from this tree, installed with every dependency pinned by
# hash (requirements.lock), into a slim Python that runs as a non-root user.
#
# Configuration precedence, highest first (the same as outside a container):
#   1. `condaproxy serve` flags (--host, --port, --workers, --config), if you pass any;
#   2. CONDAPROXY_* environment variables (`docker run -e CONDAPROXY_SERVER_PORT=9000`);
#   3. the config file: $CONDAPROXY_CONFIG, i.e. /etc/condaproxy/proxy.toml;
#   4. condaproxy's built-in defaults.
# The image sets no CONDAPROXY_* defaults of its own: its defaults (listen on 0.0.0.0:8080,
# cache in /var/cache/condaproxy) are written into the /etc/condaproxy/proxy.toml it ships, so a
# proxy.toml you mount there is taken as it is, whole, and only your own -e flags override it.

# The base image. Where no registry is reachable, build from a local Python image with
# `--build-arg PYTHON_IMAGE=...` (tests/test_image.py does).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The index pip installs from. The lock pins every file by sha256, so a mirror serves the same
# bytes or the build fails: `--build-arg PIP_INDEX_URL=https://mirror.example/simple`.
ARG PIP_INDEX_URL=https://pypi.org/simple
# pip's settings for the build only (build arguments are not kept in the image).
ARG PIP_NO_CACHE_DIR=1
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The build backend, pinned too (pyproject's build-system.requires), so the wheel is made by
# the same setuptools every time.
COPY requirements-build.lock ./
RUN pip install --require-hashes --only-binary :all: -r requirements-build.lock
COPY pyproject.toml README.md proxy.toml ./
COPY condaproxy ./condaproxy
# The image's config is the shipped proxy.toml, listening on every interface and caching in the
# volume; the build fails if either line is not where it was.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && sed -e 's|^host = "127.0.0.1"|host = "0.0.0.0"|' \
           -e 's|^path = "./cache" |path = "/var/cache/condaproxy"|' \
           proxy.toml > /wheels/proxy.toml \
    && grep -q '^host = "0.0.0.0"$' /wheels/proxy.toml \
    && grep -q '^path = "/var/cache/condaproxy"' /wheels/proxy.toml

FROM ${PYTHON_IMAGE}
ARG PIP_INDEX_URL=https://pypi.org/simple
# pip's settings for the build only (build arguments are not kept in the image).
ARG PIP_NO_CACHE_DIR=1
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_ROOT_USER_ACTION=ignore
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONDAPROXY_CONFIG=/etc/condaproxy/proxy.toml
RUN groupadd --system --gid 10001 condaproxy \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/cache/condaproxy condaproxy \
    && mkdir -p /var/cache/condaproxy /etc/condaproxy \
    && chown -R 10001:10001 /var/cache/condaproxy
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
# Dependencies exactly as locked (every file checked against its sha256), then condaproxy
# itself without resolving anything, then a check that nothing is missing or conflicting; last,
# the shipped config must load, with the image's host and cache path and no environment.
RUN pip install --require-hashes --only-binary :all: -r /tmp/requirements.lock \
    && pip install --no-deps --no-index /tmp/wheels/condaproxy-*.whl \
    && pip check \
    && mv /tmp/wheels/proxy.toml /etc/condaproxy/proxy.toml \
    && rm -rf /tmp/wheels /tmp/requirements.lock \
    && python -c "from condaproxy.settings import load_settings as load; \
s = load('/etc/condaproxy/proxy.toml', environ={}); \
assert (s.server.host, str(s.cache.path)) == ('0.0.0.0', '/var/cache/condaproxy'), s"
USER 10001:10001
WORKDIR /var/cache/condaproxy
VOLUME /var/cache/condaproxy
EXPOSE 8080
# uvicorn drains in-flight requests on SIGTERM; the app then waits for running downloads.
STOPSIGNAL SIGTERM
# Probes the port the proxy really listens on: the config is read by condaproxy's own loader,
# so CONDAPROXY_SERVER_PORT / _HOST and a mounted proxy.toml are followed (not --port flags).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request as r; from condaproxy.settings import load_settings; s = load_settings().server; h = {'0.0.0.0': '127.0.0.1', '': '127.0.0.1', '::': '[::1]'}.get(s.host, f'[{s.host}]' if ':' in s.host else s.host); r.urlopen(f'http://{h}:{s.port}/healthz', timeout=4)"]
ENTRYPOINT ["condaproxy"]
CMD ["serve"]
