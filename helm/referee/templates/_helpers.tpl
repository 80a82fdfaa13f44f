{{/* Names and labels, as in KubeRay's charts: every object takes them from here. */}}

{{/* The chart's name, overridable. */}}
{{- define "referee.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A fully qualified app name: release-chart, unless the release already says it. */}}
{{- define "referee.fullname" -}}
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

{{- define "referee.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the serving pods (stable across upgrades). */}}
{{- define "referee.selectorLabels" -}}
app.kubernetes.io/name: {{ include "referee.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/* Labels on every object. */}}
{{- define "referee.labels" -}}
helm.sh/chart: {{ include "referee.chart" . }}
{{ include "referee.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: referee
{{- end -}}

{{- define "referee.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "referee.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "referee.image" -}}
{{- $image := .image | default dict -}}
{{- $repository := $image.repository | default .root.Values.image.repository -}}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The Secret holding the API keys (one a line), or "" when no keys are configured. */}}
{{- define "referee.apiKeysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else if .Values.apiKeys.keys -}}
{{- printf "%s-api-keys" (include "referee.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the Redis URL, or "" when the URL does not come from a Secret. */}}
{{- define "referee.redisUrlSecret" -}}
{{- if .Values.redis.enabled -}}
{{- else if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else if .Values.externalRedis.url -}}
{{- printf "%s-redis-url" (include "referee.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret with extra environment (judge-endpoint credentials), or "". */}}
{{- define "referee.credentialsSecret" -}}
{{- if .Values.credentials.existingSecret -}}
{{- .Values.credentials.existingSecret -}}
{{- else if .Values.credentials.env -}}
{{- printf "%s-credentials" (include "referee.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Referee config as YAML: .Values.config with the server's address pinned so the
pod listens on every interface. Secrets never go here: they arrive as env and files. */}}
{{- define "referee.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $server := get $config "server" | default dict -}}
{{- $_ := set $server "host" "0.0.0.0" -}}
{{- $_ := set $server "port" (int .Values.ports.http) -}}
{{- if eq .Values.mode "embedded" -}}
{{- $_ := set $server "grpc_port" (int .Values.ports.grpc) -}}
{{- end -}}
{{- $_ := set $config "server" $server -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Environment shared by the server container (embedded) and the Ray containers. */}}
{{- define "referee.env" -}}
{{- if include "referee.apiKeysSecret" . }}
- name: REFEREE_SERVER__API_KEYS_FILE
  value: /var/run/referee/secrets/api-keys
{{- end }}
{{- if .Values.redis.enabled }}
- name: REFEREE_CACHE__BACKEND
  value: redis
- name: REFEREE_CACHE__URL
  value: {{ printf "redis://%s-redis-master:6379/0" .Release.Name | quote }}
{{- else if include "referee.redisUrlSecret" . }}
- name: REFEREE_CACHE__BACKEND
  value: redis
- name: REFEREE_CACHE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "referee.redisUrlSecret" . }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- end }}
- name: HF_HOME
  value: /var/cache/huggingface
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "referee.envFrom" -}}
{{- if include "referee.credentialsSecret" . }}
- secretRef:
    name: {{ include "referee.credentialsSecret" . }}
{{- end }}
{{- end -}}

{{- define "referee.volumeMounts" -}}
- name: config
  mountPath: /etc/referee
  readOnly: true
{{- if include "referee.apiKeysSecret" . }}
- name: api-keys
  mountPath: /var/run/referee/secrets
  readOnly: true
{{- end }}
- name: hf-home
  mountPath: /var/cache/huggingface
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "referee.volumes" -}}
- name: config
  configMap:
    name: {{ include "referee.fullname" . }}
{{- if include "referee.apiKeysSecret" . }}
- name: api-keys
  secret:
    secretName: {{ include "referee.apiKeysSecret" . }}
    items:
      - key: {{ .Values.apiKeys.existingSecretKey }}
        path: api-keys
{{- end }}
- name: hf-home
{{- if .Values.modelCache.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.modelCache.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "referee.validate" -}}
{{- if not (has .Values.mode (list "embedded" "ray")) -}}
{{- fail (printf "mode must be embedded or ray, not %q" .Values.mode) -}}
{{- end -}}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) -}}
{{- fail "set redis.enabled or externalRedis, not both" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.mode "ray") -}}
{{- fail "autoscaling (an HPA) is for mode embedded; in mode ray, Ray Serve autoscales replicas and ray.worker.minReplicas/maxReplicas bound the workers" -}}
{{- end -}}
{{- end -}}
