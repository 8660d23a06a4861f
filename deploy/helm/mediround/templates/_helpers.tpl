{{/*
Names, labels and the pieces every Ray pod shares: the Serve config, the image, REDIS_URL, the model volume.
*/}}

{{/* Short names: KubeRay appends "-raycluster-xxxxx" and more to the RayService name. */}}
{{- define "mediround.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "mediround.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "mediround.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mediround.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mediround.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mediround.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mediround.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mediround.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The gRPC front's pods (a worker group, so KubeRay adds its own labels next to these). */}}
{{- define "mediround.frontSelectorLabels" -}}
{{ include "mediround.selectorLabels" . }}
app.kubernetes.io/component: grpc-front
{{- end }}

{{- define "mediround.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Serve config (`serve build` schema) from .Values.serve: each application gets the model checkpoint
and no HTTP route. The RayService's serveConfigV2 and the front's ConfigMap both render this.
Serve's HTTP proxies only answer health checks here, but KubeRay's readiness probe of a RayService
worker asks the proxy on :8000 of its node, so one runs on every node that hosts a replica.
*/}}
{{- define "mediround.serveConfig" -}}
{{- $applications := list }}
{{- range $name, $app := .Values.serve.applications }}
{{- $args := merge (dict "checkpoint" $.Values.model.checkpoint) ($app.args | default dict) }}
{{- $applications = append $applications (dict "name" $name "route_prefix" nil "import_path" $app.import_path "args" $args "deployments" (list $app.deployment)) }}
{{- end }}
{{- toYaml (dict "proxy_location" "EveryNode" "http_options" (dict "host" "0.0.0.0" "port" 8000) "applications" $applications) }}
{{- end }}

{{/* The Secret and key holding the dialogue Redis URL (see redis: in values.yaml for the precedence). */}}
{{- define "mediround.redisSecretName" -}}
{{- if or .Values.redis.dev.enabled .Values.redis.url }}
{{- printf "%s-redis-url" (include "mediround.fullname" .) }}
{{- else }}
{{- required "set redis.existingSecret, redis.url or redis.dev.enabled" .Values.redis.existingSecret }}
{{- end }}
{{- end }}

{{- define "mediround.redisSecretKey" -}}
{{- if or .Values.redis.dev.enabled .Values.redis.url }}url{{ else }}{{ .Values.redis.existingSecretKey }}{{ end }}
{{- end }}

{{- define "mediround.authSecretName" -}}
{{- if .Values.auth.token }}
{{- printf "%s-auth" (include "mediround.fullname" .) }}
{{- else }}
{{- required "auth.enabled needs auth.existingSecret or auth.token" .Values.auth.existingSecret }}
{{- end }}
{{- end }}

{{- define "mediround.authSecretKey" -}}
{{- if .Values.auth.token }}token{{ else }}{{ .Values.auth.existingSecretKey }}{{ end }}
{{- end }}

{{/* Environment of every container that runs the image: the dialogue Redis, from its Secret only. */}}
{{- define "mediround.env" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mediround.redisSecretName" . }}
      key: {{ include "mediround.redisSecretKey" . }}
{{- end }}

{{- define "mediround.modelVolumeMounts" -}}
{{- if .Values.model.volume -}}
- name: models
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "mediround.modelVolumes" -}}
{{- if .Values.model.volume -}}
- name: models
  {{- toYaml .Values.model.volume | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A Ray worker group's KubeRay rayStartParams: the group's own, plus its custom Ray resources in the
quoted-JSON form `ray start --resources` takes through KubeRay.
*/}}
{{- define "mediround.rayStartParams" -}}
{{- $params := deepCopy (.rayStartParams | default dict) }}
{{- if .rayResources }}
{{- $_ := set $params "resources" (printf "%q" (toJson .rayResources)) }}
{{- end }}
{{- toYaml $params }}
{{- end }}
