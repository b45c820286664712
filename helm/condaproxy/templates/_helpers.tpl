{{- define "condaproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "condaproxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "condaproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "condaproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "condaproxy.labels" -}}
{{ include "condaproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "condaproxy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end -}}

{{/* resources, with limits.memory = workers x memoryPerWorker unless given: each uvicorn
worker builds big documents in a process of its own (bench/README.md's measured peaks). */}}
{{- define "condaproxy.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) -}}
{{- $limits := get $res "limits" | default dict -}}
{{- if not (get $limits "memory") -}}
{{- $per := .Values.memoryPerWorker | toString -}}
{{- $n := regexFind "^[0-9]+" $per -}}
{{- $_ := set $limits "memory" (printf "%d%s" (mul (int $n) (int .Values.workers)) (trimPrefix $n $per)) -}}
{{- end -}}
{{- $_ := set $res "limits" $limits -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The pod must outlive its preStop sleep; a PDB must leave room for one eviction. */}}
{{- define "condaproxy.checkTermination" -}}
{{- if and .Values.preStopSleepSeconds (le (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds)) -}}
{{- fail (printf "terminationGracePeriodSeconds %d must exceed preStopSleepSeconds %d: the pod would be killed before SIGTERM lets it drain" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds)) -}}
{{- end -}}
{{- $min := .Values.podDisruptionBudget.minAvailable -}}
{{- if and (gt (int .Values.replicaCount) 1) (not (kindIs "string" $min)) (ge (int $min) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable %d with replicaCount %d allows no eviction: no node running a replica could be drained" (int $min) (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}

{{- define "condaproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "condaproxy.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{/* The Secret this chart writes every credential given as a value into. */}}
{{- define "condaproxy.secretName" -}}
{{ include "condaproxy.fullname" . }}-credentials
{{- end -}}

{{/* The address clients use: clientConfig.url, else the sidecar's loopback, the Ingress, or
the Service's cluster DNS name. */}}
{{- define "condaproxy.url" -}}
{{- if .Values.clientConfig.url -}}
{{ .Values.clientConfig.url | trimSuffix "/" }}
{{- else if eq .Values.mode "sidecar" -}}
http://localhost:8080
{{- else if .Values.ingress.enabled -}}
{{ if .Values.ingress.tls }}https{{ else }}http{{ end }}://{{ .Values.ingress.host }}
{{- else -}}
http://{{ include "condaproxy.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.port }}
{{- end -}}
{{- end -}}

{{/*
Every secret value the proxy needs, as JSON {"items": [...]}: one item per environment variable,
with the config key that reads it ("env:NAME"), the Secret key, and either the literal value
(written to this chart's Secret) or a secretKeyRef (a Secret you manage). Nothing given in
values is dropped: a value goes to the Secret, a reference to the pod's env.
*/}}
{{- define "condaproxy.credentials" -}}
{{- $items := list -}}
{{- $seen := dict -}}
{{- range $tok := .Values.tokens -}}
{{- $env := printf "CONDAPROXY_TOKEN_%s" (regexReplaceAll "[^A-Z0-9]+" (upper $tok.name) "_") -}}
{{- $key := printf "token-%s" $tok.name -}}
{{- $item := dict "env" $env "key" $key "what" (printf "tokens[%s]" $tok.name) -}}
{{- if $tok.value -}}
{{- $_ := set $item "value" $tok.value -}}
{{- else if $.Values.existingSecret -}}
{{- $_ := set $item "ref" (dict "name" $.Values.existingSecret "key" $key) -}}
{{- else -}}
{{- fail (printf "tokens[%s].value is required unless existingSecret is set" $tok.name) -}}
{{- end -}}
{{- $items = append $items $item -}}
{{- end -}}
{{- range $name, $ch := .Values.channels -}}
{{- $slug := regexReplaceAll "[^a-z0-9]+" (lower $name) "-" | trimAll "-" -}}
{{- if hasKey $seen $slug -}}
{{- fail (printf "channels %q and %q both need credentials named %q: rename one" (get $seen $slug) $name $slug) -}}
{{- end -}}
{{- $_ := set $seen $slug $name -}}
{{- range $field := list "upstreamToken" "upstreamPassword" "upstreamBearer" -}}
{{- $given := get $ch $field -}}
{{- if $given -}}
{{- $setting := snakecase $field -}}
{{- $env := printf "CONDAPROXY_CHANNEL_%s_%s" (regexReplaceAll "-" (upper $slug) "_") (upper $setting) -}}
{{- $item := dict "env" $env "key" (printf "channel-%s-%s" $slug (kebabcase $field)) "setting" $setting "channel" $name "what" (printf "channels[%s].%s" $name $field) -}}
{{- if kindIs "string" $given -}}
{{- $_ := set $item "value" $given -}}
{{- else -}}
{{- $_ := set $item "ref" $given.secretKeyRef -}}
{{- end -}}
{{- $items = append $items $item -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.metrics.token -}}
{{- $item := dict "env" "CONDAPROXY_SCRAPE_TOKEN" "key" "metrics-token" "what" "metrics.token" -}}
{{- if kindIs "string" . -}}
{{- $_ := set $item "value" . -}}
{{- else -}}
{{- $_ := set $item "ref" .secretKeyRef -}}
{{- end -}}
{{- $items = append $items $item -}}
{{- end -}}
{{- $shared := list (list .Values.storage.accessKeyId "CONDAPROXY_S3_ACCESS_KEY_ID" "s3-access-key-id" "storage.accessKeyId") (list .Values.storage.secretAccessKey "CONDAPROXY_S3_SECRET_ACCESS_KEY" "s3-secret-access-key" "storage.secretAccessKey") (list .Values.coordination.redisUrl "CONDAPROXY_REDIS_URL" "redis-url" "coordination.redisUrl") (list .Values.coordination.peerToken "CONDAPROXY_PEER_TOKEN" "peer-token" "coordination.peerToken") -}}
{{- range $shared -}}
{{- $given := index . 0 -}}
{{- if $given -}}
{{- $item := dict "env" (index . 1) "key" (index . 2) "what" (index . 3) -}}
{{- if kindIs "string" $given -}}
{{- $_ := set $item "value" $given -}}
{{- else -}}
{{- $_ := set $item "ref" $given.secretKeyRef -}}
{{- end -}}
{{- $items = append $items $item -}}
{{- end -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{/* Several replicas need the shared bucket: RWO volumes cannot be shared between pods. */}}
{{- define "condaproxy.checkReplicas" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.storage.url) -}}
{{- fail (printf "replicaCount %d needs storage.url (an S3-compatible bucket the replicas share): each replica's cache volume is its own, so without it every pod would be a separate cache and uploads would land on one pod only" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (not .Values.storage.url) (or .Values.coordination.redisUrl .Values.coordination.valkey.enabled) -}}
{{- fail "coordination needs storage.url: Redis/Valkey coordinates replicas that share a bucket" -}}
{{- end -}}
{{- if and .Values.coordination.redisUrl .Values.coordination.valkey.enabled -}}
{{- fail "set coordination.redisUrl or coordination.valkey.enabled, not both" -}}
{{- end -}}
{{- end -}}

{{/* The env var (name) a channel's credential field is read from, or "" when not given. */}}
{{- define "condaproxy.credentialEnv" -}}
{{- $root := index . 0 -}}
{{- $what := index . 1 -}}
{{- range (include "condaproxy.credentials" $root | fromJson).items -}}
{{- if eq .what $what }}{{ .env }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* The pod's env entries for every credential. */}}
{{- define "condaproxy.credentialEnvVars" -}}
{{- $secret := include "condaproxy.secretName" . -}}
{{- range (include "condaproxy.credentials" . | fromJson).items }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      {{- if .ref }}
      name: {{ .ref.name }}
      key: {{ .ref.key }}
      {{- else }}
      name: {{ $secret }}
      key: {{ .key }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* A TOML list of strings. */}}
{{- define "condaproxy.tomlList" -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ $v | toString | quote }}{{ end }}]
{{- end -}}

{{/* extraConfig.<section>: more keys for a [section] of proxy.toml, after the chart's own. */}}
{{- define "condaproxy.extra" -}}
{{- $root := index . 0 -}}
{{- $section := index . 1 -}}
{{- $managed := dict "server" (list "host" "port" "workers") "cache" (list "path" "repodata_ttl" "negative_ttl" "max_size" "min_free") "upstream" (list "connect_timeout" "read_timeout") "uploads" (list "max_upload_size") "metrics" (list "token") -}}
{{- range $key, $value := get $root.Values.extraConfig $section | default dict }}
{{- if has $key (get $managed $section) }}
{{- fail (printf "extraConfig.%s.%s is set by the chart's own values: set those instead" $section $key) }}
{{- end }}
{{ $key }} = {{ toJson $value }}
{{- end -}}
{{- end -}}

{{/* proxy.toml, rendered from values. Paths match the Dockerfile's. */}}
{{- define "condaproxy.config" -}}
[server]
host = {{ if eq .Values.mode "sidecar" }}"127.0.0.1"{{ else }}"0.0.0.0"{{ end }}
port = 8080
workers = {{ .Values.workers }}
{{- include "condaproxy.extra" (list . "server") }}

[cache]
path = "/var/cache/condaproxy"
repodata_ttl = {{ .Values.cache.repodataTtl }}
negative_ttl = {{ .Values.cache.negativeTtl }}
max_size = {{ .Values.cache.maxSize | quote }}
min_free = {{ .Values.cache.minFree | quote }}
{{- include "condaproxy.extra" (list . "cache") }}

[upstream]
connect_timeout = {{ .Values.upstream.connectTimeout }}
read_timeout = {{ .Values.upstream.readTimeout }}
{{- include "condaproxy.extra" (list . "upstream") }}

[uploads]
max_upload_size = {{ .Values.uploads.maxUploadSize | quote }}
{{- include "condaproxy.extra" (list . "uploads") }}
{{- if or .Values.metrics.token .Values.extraConfig.metrics }}

[metrics]
{{- if .Values.metrics.token }}
token = "env:CONDAPROXY_SCRAPE_TOKEN"
{{- end }}
{{- include "condaproxy.extra" (list . "metrics") }}
{{- end }}
{{- with .Values.storage }}{{ if .url }}

[storage]
url = {{ .url | quote }}
region = {{ .region | quote }}
max_size = {{ .maxSize | default "0" | quote }}
{{- with .endpoint }}
endpoint = {{ . | quote }}
{{- end }}
{{- if .allowHttp }}
allow_http = true
{{- end }}
{{- if .accessKeyId }}
access_key_id = "env:CONDAPROXY_S3_ACCESS_KEY_ID"
{{- end }}
{{- if .secretAccessKey }}
secret_access_key = "env:CONDAPROXY_S3_SECRET_ACCESS_KEY"
{{- end }}

[cluster]
replica_id = "env:POD_NAME"
poll_interval = {{ $.Values.coordination.pollInterval }}
{{- if $.Values.coordination.redisUrl }}
redis_url = "env:CONDAPROXY_REDIS_URL"
{{- else if $.Values.coordination.valkey.enabled }}
redis_url = "redis://{{ printf "%s-valkey" (include "condaproxy.fullname" $) | trunc 63 | trimSuffix "-" }}:6379/0"
{{- end }}
{{- if $.Values.coordination.peerToken }}
peer_url = "env:CONDAPROXY_PEER_URL"
peer_token = "env:CONDAPROXY_PEER_TOKEN"
{{- end }}
{{- end }}{{ end }}
{{- range $name, $ch := .Values.channels }}

[channels.{{ $name | quote }}]
{{- with $ch.upstream }}
upstream = {{ . | quote }}
{{- end }}
{{- if $ch.mirrorOnly }}
mirror_only = true
{{- end }}
{{- if $ch.private }}
private = true
{{- end }}
{{- with $ch.allowUpstream }}
allow_upstream = {{ include "condaproxy.tomlList" . }}
{{- end }}
{{- with $ch.allowedOrigins }}
allowed_origins = {{ include "condaproxy.tomlList" . }}
{{- end }}
{{- with $ch.upstreamUsername }}
upstream_username = {{ . | quote }}
{{- end }}
{{- range $field := list "upstreamToken" "upstreamPassword" "upstreamBearer" }}
{{- if get $ch $field }}
{{ snakecase $field }} = "env:{{ include "condaproxy.credentialEnv" (list $ (printf "channels[%s].%s" $name $field)) }}"
{{- end }}
{{- end }}
{{- end }}
{{- range $tok := .Values.tokens }}

[tokens.{{ $tok.name | quote }}]
token = "env:{{ include "condaproxy.credentialEnv" (list $ (printf "tokens[%s]" $tok.name)) }}"
roles = { {{ range $i, $c := keys $tok.roles | sortAlpha }}{{ if $i }}, {{ end }}{{ $c | quote }} = {{ index $tok.roles $c | quote }}{{ end }} }
{{- end }}
{{- end -}}
