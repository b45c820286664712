# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY condaproxy ./condaproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/cache/condaproxy condaproxy \
    && mkdir -p /var/cache/condaproxy /etc/condaproxy \
    && chown condaproxy /var/cache/condaproxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY proxy.toml /etc/condaproxy/proxy.toml
ENV CONDAPROXY_CONFIG=/etc/condaproxy/proxy.toml \
    CONDAPROXY_SERVER_HOST=0.0.0.0 \
    CONDAPROXY_CACHE_PATH=/var/cache/condaproxy
USER condaproxy
VOLUME /var/cache/condaproxy
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["condaproxy", "serve"]
