{{/*
Names and labels.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "crm-digital-fte.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: "<release>-<chart>", or the release name when it already
contains the chart name. Truncated so that "-gateway-metrics" style suffixes still fit in 63.
*/}}
{{- define "crm-digital-fte.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "crm-digital-fte.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change for a pod: what Deployments and Services select on. */}}
{{- define "crm-digital-fte.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crm-digital-fte.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels of every resource. */}}
{{- define "crm-digital-fte.labels" -}}
helm.sh/chart: {{ include "crm-digital-fte.chart" . }}
{{ include "crm-digital-fte.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "crm-digital-fte.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "crm-digital-fte.componentLabels" -}}
{{ include "crm-digital-fte.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "crm-digital-fte.componentSelectorLabels" -}}
{{ include "crm-digital-fte.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "crm-digital-fte.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crm-digital-fte.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount of the pre-install/pre-upgrade hook Jobs. Hooks run before the release's own
resources exist, so with create=true they get a hook-scoped copy of the ServiceAccount.
*/}}
{{- define "crm-digital-fte.hookServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-hooks" (include "crm-digital-fte.fullname" .) }}
{{- else }}
{{- include "crm-digital-fte.serviceAccountName" . }}
{{- end }}
{{- end }}

{{- define "crm-digital-fte.configMapName" -}}
{{- printf "%s-config" (include "crm-digital-fte.fullname" .) }}
{{- end }}

{{/* The Secret the pods read their secret settings from (chart-made or existingSecret). */}}
{{- define "crm-digital-fte.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-secret" (include "crm-digital-fte.fullname" .) }}
{{- end }}
{{- end }}

{{- define "crm-digital-fte.hookConfigMapName" -}}
{{- printf "%s-hook-config" (include "crm-digital-fte.fullname" .) }}
{{- end }}

{{/* The Secret the hook Jobs read: the user's existingSecret, or a hook-scoped copy. */}}
{{- define "crm-digital-fte.hookSecretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-hook-secret" (include "crm-digital-fte.fullname" .) }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "crm-digital-fte.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Settings -> environment variables.

A values key is a Settings field in camelCase; the variable is the field name upper-cased
(kafkaBootstrapServers -> KAFKA_BOOTSTRAP_SERVERS). Empty strings and nulls are skipped so the
application default applies. Numbers are printed without exponent (YAML/JSON numbers reach
templates as float64, and 1048576 would otherwise render as 1.048576e+06).
*/}}
{{- define "crm-digital-fte.envName" -}}
{{- . | snakecase | upper }}
{{- end }}

{{- define "crm-digital-fte.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq (floor .) . }}{{ printf "%d" (int64 .) }}{{ else }}{{ printf "%v" . }}{{ end }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The ConfigMap data: every non-empty key of .Values.config, sorted. */}}
{{- define "crm-digital-fte.configData" -}}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
{{ include "crm-digital-fte.envName" $key }}: {{ include "crm-digital-fte.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret data: every non-empty key of .Values.secrets, base64-encoded. */}}
{{- define "crm-digital-fte.secretData" -}}
{{- range $key, $value := .Values.secrets }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ include "crm-digital-fte.envName" $key }}: {{ toString $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod-spec pieces shared by the Deployments, the hook Jobs and the test pod.
*/}}

{{/* envFrom: the settings ConfigMap and Secret; call with (dict "root" $ "hook" true|false). */}}
{{- define "crm-digital-fte.envFrom" -}}
- configMapRef:
    name: {{ ternary (include "crm-digital-fte.hookConfigMapName" .root) (include "crm-digital-fte.configMapName" .root) .hook }}
- secretRef:
    name: {{ ternary (include "crm-digital-fte.hookSecretName" .root) (include "crm-digital-fte.secretName" .root) .hook }}
{{- with .root.Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
env: HOME and caches on the /tmp emptyDir (the root filesystem is read-only), then the global
and per-component extras; call with (dict "root" $ "extra" <list>).
*/}}
{{- define "crm-digital-fte.env" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "crm-digital-fte.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.temporal.secretName }}
- name: temporal-tls
  mountPath: {{ .Values.tls.temporal.mountPath }}
  readOnly: true
{{- end }}
{{- if .Values.tls.kafka.secretName }}
- name: kafka-tls
  mountPath: {{ .Values.tls.kafka.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "crm-digital-fte.volumes" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with .Values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- if .Values.tls.temporal.secretName }}
- name: temporal-tls
  secret:
    secretName: {{ .Values.tls.temporal.secretName }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.kafka.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.tls.kafka.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/*
A Kubernetes probe: the chart's httpGet handler plus the timing fields from values.
Call with (dict "probe" <values> "path" "/livez" "port" "http").
*/}}
{{- define "crm-digital-fte.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{- with omit .probe "enabled" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Checksum of everything the pods read through envFrom, so a settings change rolls them. An
existingSecret's content is outside the chart: only its name counts (roll the pods yourself, or
use a reloader, when it changes).
*/}}
{{- define "crm-digital-fte.configChecksum" -}}
{{- $secret := ternary (printf "existingSecret=%s" .Values.existingSecret) (include "crm-digital-fte.secretData" .) (ne .Values.existingSecret "") }}
{{- printf "%s\n---\n%s" (include "crm-digital-fte.configData" .) $secret | sha256sum }}
{{- end }}
