{{- define "condaproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "condaproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "condaproxy.labels" -}}
{{ include "condaproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "condaproxy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "condaproxy.secretName" -}}
{{ .Values.existingSecret | default (printf "%s-tokens" (include "condaproxy.fullname" .)) }}
{{- end -}}

{{/* The environment variable that carries a token's value into the config. */}}
{{- define "condaproxy.tokenEnv" -}}
CONDAPROXY_TOKEN_{{ . | upper | replace "-" "_" }}
{{- end -}}

{{/* proxy.toml, rendered from values. Paths match the Dockerfile's. */}}
{{- define "condaproxy.config" -}}
[server]
host = "0.0.0.0"
port = 8080
workers = {{ .Values.workers }}

[cache]
path = "/var/cache/condaproxy"
repodata_ttl = {{ .Values.cache.repodataTtl }}
negative_ttl = {{ .Values.cache.negativeTtl }}
max_size = {{ .Values.cache.maxSize | quote }}
min_free = {{ .Values.cache.minFree | quote }}

[upstream]
connect_timeout = {{ .Values.upstream.connectTimeout }}
read_timeout = {{ .Values.upstream.readTimeout }}

[uploads]
max_upload_size = {{ .Values.uploads.maxUploadSize | quote }}
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
allow_upstream = [{{ range $i, $n := . }}{{ if $i }}, {{ end }}{{ $n | quote }}{{ end }}]
{{- end }}
{{- end }}
{{- range $tok := .Values.tokens }}

[tokens.{{ $tok.name | quote }}]
token = "env:{{ include "condaproxy.tokenEnv" $tok.name }}"
roles = { {{ range $i, $c := keys $tok.roles | sortAlpha }}{{ if $i }}, {{ end }}{{ $c | quote }} = {{ index $tok.roles $c | quote }}{{ end }} }
{{- end }}
{{- end -}}
