{{/*
Expand the name of the chart.
*/}}
{{- define "device-logs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (63 characters at most, DNS naming
spec). If the release name contains the chart name it is used as the full name.
*/}}
{{- define "device-logs.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "device-logs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource, without the component.
*/}}
{{- define "device-logs.baseLabels" -}}
helm.sh/chart: {{ include "device-logs.chart" . }}
app.kubernetes.io/name: {{ include "device-logs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: device-logs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the worker's resources.
*/}}
{{- define "device-logs.labels" -}}
{{ include "device-logs.baseLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Selector labels of the worker's pods (the test and create-topics pods have
another component, so the Service, the PDB and the spread constraints ignore
them).
*/}}
{{- define "device-logs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "device-logs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
metadata.annotations of a resource: commonAnnotations merged with the given
ones (which win), already indented under metadata; nothing when empty.
Usage: {{- include "device-logs.annotations" (dict "root" $ "extra" .Values.x.annotations) }}
*/}}
{{- define "device-logs.annotations" -}}
{{- $all := merge (deepCopy (.extra | default dict)) (.root.Values.commonAnnotations | default dict) }}
{{- with $all }}
{{- toYaml (dict "annotations" .) | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "device-logs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "device-logs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: [registry/]repository(@digest|:tag). global.imageRegistry wins
over the image's registry; the digest wins over the tag.
Usage: include "device-logs.imageRef" (dict "image" .Values.image "global" .Values.global "defaultTag" .Chart.AppVersion)
*/}}
{{- define "device-logs.imageRef" -}}
{{- $registry := .global.imageRegistry | default .image.registry -}}
{{- $ref := .image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (toString (.image.tag | default .defaultTag)) -}}
{{- end -}}
{{- end }}

{{- define "device-logs.image" -}}
{{- include "device-logs.imageRef" (dict "image" .Values.image "global" .Values.global "defaultTag" .Chart.AppVersion) -}}
{{- end }}

{{/*
imagePullSecrets of every pod (global ones first); nothing when there are none.
*/}}
{{- define "device-logs.imagePullSecrets" -}}
{{- $secrets := list }}
{{- range (concat (.Values.global.imagePullSecrets | default list) (.Values.image.pullSecrets | default list)) }}
{{- if kindIs "map" . }}
{{- $secrets = append $secrets .name }}
{{- else }}
{{- $secrets = append $secrets . }}
{{- end }}
{{- end }}
{{- with ($secrets | uniq) }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Port of the worker's HTTP server (/metrics, /livez, /readyz), from config.http.listen.
*/}}
{{- define "device-logs.httpPort" -}}
{{- regexFind "[0-9]+$" .Values.config.http.listen | int -}}
{{- end }}

{{/*
Seconds in a duration string such as "10s", "1m30s", "500ms" (the forms the
schema allows), as a float.
*/}}
{{- define "device-logs.durationSeconds" -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" . -1 -}}
{{- $n := regexFind "^[0-9]+" . | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $total = addf $total (mulf $n (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{/*
TOML rendering of the config tree. Helm's toToml would turn every integer of
the values into a float (partitions = 12.0): this renders integers as
integers, strings as TOML basic strings (JSON escapes are valid TOML escapes),
scalar keys before sub-tables, and quotes keys that are not bare
(e.g. "ssl.ca.location").
*/}}
{{- define "device-logs.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end -}}
{{- end }}

{{- define "device-logs.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}
{{- . -}}
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "device-logs.tomlValue" $v }}{{ end }}]
{{- else -}}
{{- fail (printf "config: cannot render %v (%s) as TOML" . (kindOf .)) -}}
{{- end -}}
{{- end }}

{{/*
One table and its sub-tables. Usage: include "device-logs.tomlTable" (dict "path" (list) "table" .Values.config)
*/}}
{{- define "device-logs.tomlTable" -}}
{{- $path := .path -}}
{{- if $path }}
{{- $keys := list }}
{{- range $path }}{{ $keys = append $keys (include "device-logs.tomlKey" .) }}{{ end }}
[{{ join "." $keys }}]
{{- end }}
{{- range $k, $v := .table }}
{{- if not (kindIs "map" $v) }}
{{ include "device-logs.tomlKey" $k }} = {{ include "device-logs.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- if kindIs "map" $v }}
{{ include "device-logs.tomlTable" (dict "path" (append $path $k) "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "device-logs.configToml" -}}
# device-logs worker configuration, rendered by the Helm chart from .Values.config.
# Secrets come from the environment (DEVICE_LOGS__...), never from this file.

{{ include "device-logs.tomlTable" (dict "path" (list) "table" .Values.config) | trim }}
{{- end }}

{{/*
Environment of the worker and of the create-topics Job: credentials from
existing Secrets, then extraEnvVars.
*/}}
{{- define "device-logs.env" -}}
{{- if .Values.redis.existingSecret }}
- name: DEVICE_LOGS__REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretPasswordKey }}
{{- end }}
{{- if .Values.kafka.sasl.existingSecret }}
{{- if .Values.kafka.sasl.existingSecretUsernameKey }}
- name: DEVICE_LOGS__KAFKA__SASL__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.existingSecretUsernameKey }}
{{- end }}
- name: DEVICE_LOGS__KAFKA__SASL__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.existingSecretPasswordKey }}
{{- end }}
{{- with .Values.extraEnvVars }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "device-logs.envFrom" -}}
{{- if .Values.extraEnvVarsCM }}
- configMapRef:
    name: {{ .Values.extraEnvVarsCM }}
{{- end }}
{{- if .Values.extraEnvVarsSecret }}
- secretRef:
    name: {{ .Values.extraEnvVarsSecret }}
{{- end }}
{{- end }}

{{/*
Cross-field checks that the schema cannot express. Included by the Deployment,
so `helm template`, `helm lint` and `helm install` all fail with the message.
*/}}
{{- define "device-logs.validate" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are exclusive: enable at most one of them (KEDA creates its own HPA)" }}
{{- end }}
{{- $shutdown := include "device-logs.durationSeconds" .Values.config.shutdown.timeout | float64 }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdown.timeout (%s), or Kubernetes kills the worker before it has committed and flushed" .Values.terminationGracePeriodSeconds .Values.config.shutdown.timeout) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: the name of an existing Secret with the TLS material" }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled (gt (int .Values.autoscaling.hpa.minReplicas) (int .Values.autoscaling.hpa.maxReplicas)) }}
{{- fail "autoscaling.hpa.minReplicas must not exceed autoscaling.hpa.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.keda.enabled (gt (int .Values.autoscaling.keda.minReplicas) (int .Values.autoscaling.keda.maxReplicas)) }}
{{- fail "autoscaling.keda.minReplicas must not exceed autoscaling.keda.maxReplicas" }}
{{- end }}
{{- include "device-logs.validateShards" (dict "root" . "existing" (lookup "v1" "ConfigMap" .Release.Namespace (include "device-logs.fullname" .))) }}
{{- if and .Values.autoscaling.hpa.enabled (not (or .Values.autoscaling.hpa.targetCPUUtilizationPercentage .Values.autoscaling.hpa.targetMemoryUtilizationPercentage)) }}
{{- fail "autoscaling.hpa needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}

{{/*
On upgrade (lookup finds the release's ConfigMap; `helm template` finds
nothing): refuse to change config.redis.shards for the same Redis and key
prefix, since that orphans pending deadlines.
*/}}
{{- define "device-logs.validateShards" -}}
{{- $old := get (.existing.data | default dict) "config.toml" | default "" }}
{{- if $old }}
{{- $new := include "device-logs.configToml" .root }}
{{- $oldShards := regexFind "(?m)^shards = [0-9]+$" $old }}
{{- $sameKeyspace := and (eq (regexFind "(?m)^url = .*$" $old) (regexFind "(?m)^url = .*$" $new)) (eq (regexFind "(?m)^key_prefix = .*$" $old) (regexFind "(?m)^key_prefix = .*$" $new)) }}
{{- if and $oldShards $sameKeyspace (ne $oldShards (regexFind "(?m)^shards = [0-9]+$" $new)) }}
{{- fail (printf "config.redis.shards cannot change (%s now, %d requested) for the same Redis and key prefix: it orphans pending deadlines. Keep it, or move to a fresh config.redis.key_prefix" (trimPrefix "shards = " $oldShards) (int .root.Values.config.redis.shards)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod-level pieces shared by the worker and the create-topics Job.
*/}}
{{- define "device-logs.configVolume" -}}
- name: config
  configMap:
    name: {{ .name }}
    items:
      - key: config.toml
        path: config.toml
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .root.Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "device-logs.configVolumeMounts" -}}
- name: config
  mountPath: /etc/device-logs/config.toml
  subPath: config.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}
