{{/* A Ray pod template (head or worker): the Referee image, its env, Secrets and config
volume, and the role's resources and scheduling. KubeRay adds the `ray start` command,
the Ray ports it needs and its own probes. */}}
{{- define "referee.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $role := .role -}}
metadata:
  annotations:
    checksum/config: {{ include "referee.config" $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "referee.labels" $root | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "referee.serviceAccountName" $root }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .name }}
      image: {{ include "referee.image" (dict "root" $root "image" $role.image) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      {{- if .head }}
      ports:
        - name: gcs
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
        - name: http
          containerPort: {{ $root.Values.ports.http }}
        {{- if $root.Values.ports.grpc }}
        - name: grpc
          containerPort: {{ $root.Values.ports.grpc }}
        {{- end }}
        - name: metrics
          containerPort: 8080
      {{- else }}
      ports:
        - name: metrics  # Ray's metrics export port: the scorer replicas' ray_referee_*
          containerPort: 8080
      {{- end }}
      env:
        {{- include "referee.env" $root | nindent 8 }}
      {{- with include "referee.envFrom" $root }}
      envFrom:
        {{- . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $role.resources | nindent 8 }}
      volumeMounts:
        {{- include "referee.volumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "referee.volumes" $root | nindent 4 }}
  {{- with $role.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
