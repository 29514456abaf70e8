{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "lark-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters.
If the release name already contains the chart name it is used as is.
*/}}
{{- define "lark-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "lark-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels (stable across upgrades).
*/}}
{{- define "lark-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lark-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of every resource.
*/}}
{{- define "lark-bridge.labels" -}}
helm.sh/chart: {{ include "lark-bridge.chart" . }}
{{ include "lark-bridge.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lark-bridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Name of the ServiceAccount.
*/}}
{{- define "lark-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lark-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the bridge's secret settings (chart-made or existing).
*/}}
{{- define "lark-bridge.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "lark-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/*
Container image reference; a digest wins over the tag.
*/}}
{{- define "lark-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A config value as an environment variable string. Values files give every number as float64,
which Go would print as 1e+06; whole numbers are printed as integers instead, and booleans as
true/false. Returns "" for null.
*/}}
{{- define "lark-bridge.envValue" -}}
{{- $v := . }}
{{- if kindIs "invalid" $v }}
{{- else if kindIs "float64" $v }}
{{- if eq $v (float64 (int64 $v)) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}

{{/*
Mounted path of the Kafka CA bundle, or "" when no CA is mounted.
*/}}
{{- define "lark-bridge.kafkaCaFile" -}}
{{- if or .Values.kafkaCa.secretName .Values.kafkaCa.configMapName }}
{{- printf "%s/ca.crt" (trimSuffix "/" .Values.kafkaCa.mountPath) }}
{{- end }}
{{- end }}

{{/*
The non-secret BRIDGE_* variables as a YAML map (the ConfigMap's data). Empty values are left
out, so the bridge's default applies.
*/}}
{{- define "lark-bridge.configData" -}}
{{- $caFile := include "lark-bridge.kafkaCaFile" . }}
{{- $data := dict }}
{{- range $key, $value := .Values.config }}
{{- $text := include "lark-bridge.envValue" $value }}
{{- if and (ne $text "") (ne $key "kafka_publish_timeout_s") }}
{{- $_ := set $data (printf "BRIDGE_%s" (upper $key)) $text }}
{{- end }}
{{- end }}
{{- /* Deprecated key: values.yaml always carries answer_deadline_s's default, so the old key, when
set, is the one the user chose. */}}
{{- $old := include "lark-bridge.envValue" (.Values.config.kafka_publish_timeout_s | default "") }}
{{- if ne $old "" }}
{{- $_ := set $data "BRIDGE_ANSWER_DEADLINE_S" $old }}
{{- end }}
{{- if $caFile }}
{{- $_ := set $data "BRIDGE_KAFKA_SSL_CAFILE" $caFile }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Fail rendering on inconsistent values (the bridge would refuse to start, or shut down unsafely).
*/}}
{{- define "lark-bridge.validate" -}}
{{- $shutdown := float64 .Values.config.shutdown_timeout_s }}
{{- $sleep := float64 .Values.lifecycle.preStopSleepSeconds }}
{{- $grace := float64 .Values.terminationGracePeriodSeconds }}
{{- if le $grace (addf $shutdown $sleep) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than lifecycle.preStopSleepSeconds (%v) + config.shutdown_timeout_s (%v), or pods are killed mid-shutdown" $grace $sleep $shutdown) }}
{{- end }}
{{- if and .Values.kafkaCa.secretName .Values.kafkaCa.configMapName }}
{{- fail "kafkaCa: set secretName or configMapName, not both" }}
{{- end }}
{{- if and (include "lark-bridge.kafkaCaFile" .) .Values.config.kafka_ssl_cafile }}
{{- fail "config.kafka_ssl_cafile must be empty when kafkaCa mounts a CA bundle (the chart points it at the mounted file)" }}
{{- end }}
{{- if hasPrefix "SASL_" (toString .Values.config.kafka_security_protocol) }}
{{- if not .Values.config.kafka_sasl_mechanism }}
{{- fail "config.kafka_sasl_mechanism is required with a SASL_* config.kafka_security_protocol" }}
{{- end }}
{{- if not .Values.config.kafka_sasl_username }}
{{- fail "config.kafka_sasl_username is required with a SASL_* config.kafka_security_protocol" }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.kafkaSaslPassword) }}
{{- fail "secrets.kafkaSaslPassword (or secrets.existingSecret) is required with a SASL_* config.kafka_security_protocol" }}
{{- end }}
{{- end }}
{{- if and (not .Values.secrets.existingSecret) .Values.secrets.larkEncryptKeyPrevious (not .Values.secrets.larkEncryptKey) }}
{{- fail "secrets.larkEncryptKeyPrevious is set but secrets.larkEncryptKey is not" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if hasPrefix "BRIDGE_" (toString .name) }}
{{- fail (printf "extraEnv must not set %s: use config (or secrets) instead" .name) }}
{{- end }}
{{- end }}
{{- end }}
