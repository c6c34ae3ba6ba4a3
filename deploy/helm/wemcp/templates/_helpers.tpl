{{/* Names and labels */}}
{{- define "wemcp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wemcp.svcname" -}}
{{- printf "%s-%s" (include "wemcp.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wemcp.labels" -}}
app.kubernetes.io/part-of: wemcp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wemcp.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end -}}

{{- define "wemcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wemcp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wemcp.image" -}}
{{- $svc := index .root.Values.services .name | default dict -}}
{{- $img := $svc.image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/%s-%s" .root.Values.image.registry .root.Values.image.repositoryPrefix .name) -}}
{{- printf "%s:%s" $repo ($img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "wemcp.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.existingSecret }}
      key: {{ .key }}
{{- end -}}

{{/* The environment every service reads (libs/common/src/wemcp/common/config.py) */}}
{{- define "wemcp.commonEnv" -}}
{{- $root := . -}}
{{ include "wemcp.secretEnv" (dict "root" $root "env" "DATABASE_URL" "key" $root.Values.secrets.keys.databaseUrl) }}
{{ include "wemcp.secretEnv" (dict "root" $root "env" "REDIS_URL" "key" $root.Values.secrets.keys.redisUrl) }}
{{ include "wemcp.secretEnv" (dict "root" $root "env" "WEMCP_SERVICE_KEYS" "key" $root.Values.secrets.keys.serviceKeys) }}
{{- if $root.Values.nats.existingSecret }}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.nats.existingSecret }}
      key: {{ $root.Values.nats.existingSecretKey }}
{{- else if $root.Values.nats.enabled }}
- name: NATS_URL
  value: {{ printf "nats://%s-nats:4222" $root.Release.Name | quote }}
{{- else }}
- name: NATS_URL
  value: {{ required "nats.url (or nats.existingSecret, or nats.enabled) is required" $root.Values.nats.url | quote }}
{{- end }}
- name: WEMCP_ENV
  value: production
- name: LOG_LEVEL
  value: {{ $root.Values.telemetry.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ $root.Values.telemetry.logFormat | quote }}
{{- if $root.Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $root.Values.telemetry.otlpEndpoint | quote }}
{{- end }}
- name: WEMCP_EGRESS_ALLOW
  value: {{ $root.Values.egressAllow | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HOME
  value: /tmp
{{- range $k, $v := $root.Values.extraEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}
