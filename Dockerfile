# syntax=docker/dockerfile:1
# Build a wheel, then install it into a slim runtime that runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY condaproxy ./condaproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONDAPROXY_CONFIG=/etc/condaproxy/proxy.toml \
    CONDAPROXY_SERVER_HOST=0.0.0.0 \
    CONDAPROXY_SERVER_PORT=8080 \
    CONDAPROXY_CACHE_PATH=/var/cache/condaproxy \
    TMPDIR=/var/cache/condaproxy/tmp
RUN groupadd --system --gid 10001 condaproxy \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/cache/condaproxy condaproxy \
    && mkdir -p /var/cache/condaproxy/tmp /etc/condaproxy \
    && chown -R 10001:10001 /var/cache/condaproxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY proxy.toml /etc/condaproxy/proxy.toml
USER 10001:10001
VOLUME /var/cache/condaproxy
EXPOSE 8080
# uvicorn drains in-flight requests on SIGTERM; the app then waits for running downloads.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
ENTRYPOINT ["condaproxy"]
CMD ["serve"]
