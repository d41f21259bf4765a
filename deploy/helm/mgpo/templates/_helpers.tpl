{{- define "mgpo.fullname" -}}
{{- printf "%s-mgpo" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "mgpo.labels" -}}
app.kubernetes.io/name: mgpo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mgpo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "mgpo.tokenSecret" -}}
{{- default (printf "%s-api-token" (include "mgpo.fullname" .)) .Values.apiToken.existingSecret -}}
{{- end -}}

{{- define "mgpo.redisSecret" -}}
{{- default (printf "%s-redis" (include "mgpo.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "mgpo.pvc" -}}
{{- default (printf "%s-data" (include "mgpo.fullname" .)) .Values.storage.existingClaim -}}
{{- end -}}

{{/* A value kept across upgrades: the existing Secret's, else a new random one. */}}
{{- define "mgpo.keep" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every container that runs mgpo code. */}}
{{- define "mgpo.env" -}}
- name: HOME
  value: /tmp
- name: MGPO_API_TOKEN_FILE
  value: /etc/mgpo/token/{{ .Values.apiToken.key }}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mgpo.redisSecret" . }}
      key: password
- name: MGPO_REDIS_URL
  value: "redis://:$(REDIS_PASSWORD)@{{ include "mgpo.fullname" . }}-redis:6379/0"
{{- else }}
- name: MGPO_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.externalUrlSecret is required when redis.enabled is false" .Values.redis.externalUrlSecret }}
      key: url
{{- end }}
{{- end -}}

{{/* Volumes every Ray pod has: shared data, /tmp (read-only root), /dev/shm, the token. */}}
{{- define "mgpo.volumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "mgpo.pvc" . }}
- name: tmp
  emptyDir: {}
- name: ray-tmp
  emptyDir: {}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.ray.shmSize }}
- name: token
  secret:
    secretName: {{ include "mgpo.tokenSecret" . }}
- name: config
  configMap:
    name: {{ include "mgpo.fullname" . }}-config
{{- end -}}

{{- define "mgpo.mounts" -}}
- name: data
  mountPath: {{ .Values.storage.mountPath }}
- name: tmp
  mountPath: /tmp
- name: ray-tmp
  mountPath: /tmp/ray
- name: shm
  mountPath: /dev/shm
{{- end -}}

{{- define "mgpo.podSecurity" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}
