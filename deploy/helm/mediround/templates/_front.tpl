{{/*
The gRPC front as a Ray worker group of the RayService. `mediround serve` is a Ray driver: ray.init()
needs a raylet on its own node, so each front pod first joins the cluster as a node that holds no
replicas (num-cpus 0) with KubeRay's generated `ray start`, minus --block, then runs the grpcio server
attached (--attach) to the applications KubeRay deployed from serveConfigV2: it deploys nothing, and
stopping one front leaves them serving the others. One bearer token comes from MEDIROUND_TOKEN (so it
never shows on a command line); tenants (auth.tenantsSecret) from a tokens file in a Secret mounted as a
directory: a subPath mount would never see the Secret rotate. The PACS endpoints (pacs.secret) likewise:
the endpoints file and the credentials it names, all in one Secret mounted as a directory.
Being a worker group, the fronts follow the cluster through KubeRay's zero-downtime upgrades.
KubeRay (>= 1.1) leaves this command alone because of the overwrite-container-cmd annotation, and its
injected liveness probe (the raylet's health) still restarts a front whose node has died.
*/}}
{{- define "mediround.frontGroup" -}}
{{- $port := int .Values.front.port }}
{{- $tenants := and .Values.auth.enabled .Values.auth.tenantsSecret }}
{{- if and $tenants .Values.auth.token }}
{{- fail "auth.token and auth.tenantsSecret exclude each other (mediround serve takes --token or --tokens-file): drop auth.token" }}
{{- end }}
{{- $pacs := .Values.pacs.secret }}
{{- $mounts := or .Values.tls.enabled .Values.model.volume $tenants $pacs }}
{{- /* --checkpoint: the front names the replicas' checkpoint in the DICOM SEGs it writes */}}
{{- $args := list "--address" (printf "0.0.0.0:%d" $port) "--ray-address" "auto" "--attach"
      "--metrics-port" (toString (int .Values.front.metricsPort)) "--metrics-address" "0.0.0.0"
      "--checkpoint" .Values.model.checkpoint }}
{{- if .Values.tls.enabled }}
{{- $args = concat $args (list "--tls-cert" "/etc/mediround/tls/tls.crt" "--tls-key" "/etc/mediround/tls/tls.key") }}
{{- end }}
{{- if $tenants }}
{{- $args = concat $args (list "--tokens-file" (printf "/etc/mediround/tenants/%s" .Values.auth.tenantsSecretKey)) }}
{{- end }}
{{- if $pacs }}
{{- $args = concat $args (list "--pacs-file" (printf "/etc/mediround/pacs/%s" .Values.pacs.secretKey)) }}
{{- end }}
{{- $args = concat $args .Values.front.extraArgs -}}
- groupName: front
  replicas: {{ .Values.front.replicas }}
  minReplicas: {{ .Values.front.replicas }}
  maxReplicas: {{ .Values.front.replicas }}
  rayStartParams:
    num-cpus: "0"
  template:
    metadata:
      labels:
        {{- include "mediround.frontSelectorLabels" . | nindent 8 }}
      annotations:
        ray.io/overwrite-container-cmd: "true"
    spec:
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: grpc-front
          image: {{ include "mediround.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["/bin/bash", "-c", "--"]
          args:
            - |
              ulimit -n 65536
              eval "${KUBERAY_GEN_RAY_START_CMD/--block/}"
              exec mediround serve {{ range $args }}{{ squote . }} {{ end }}
          env:
            {{- include "mediround.env" . | nindent 12 }}
            {{- if and .Values.auth.enabled (not $tenants) }}
            - name: MEDIROUND_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "mediround.authSecretName" . }}
                  key: {{ include "mediround.authSecretKey" . }}
            {{- end }}
          ports:
            - {name: grpc, containerPort: {{ $port }}}
            - {name: metrics, containerPort: {{ .Values.front.metricsPort }}}
          # Ready once `mediround serve` listens, which is after the three applications run.
          readinessProbe:
            {{- if .Values.tls.enabled }}
            tcpSocket: {port: {{ $port }}}
            {{- else }}
            grpc: {port: {{ $port }}}
            {{- end }}
            periodSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml .Values.front.resources | nindent 12 }}
          {{- /* Nothing to mount: no volumeMounts at all, as `volumeMounts: null` breaks the CRD */}}
          {{- if $mounts }}
          volumeMounts:
            {{- if .Values.tls.enabled }}
            - {name: tls, mountPath: /etc/mediround/tls, readOnly: true}
            {{- end }}
            {{- if $tenants }}
            - {name: tenants, mountPath: /etc/mediround/tenants, readOnly: true}
            {{- end }}
            {{- if $pacs }}
            - {name: pacs, mountPath: /etc/mediround/pacs, readOnly: true}
            {{- end }}
            {{- with include "mediround.modelVolumeMounts" . }}{{ . | nindent 12 }}{{ end }}
          {{- end }}
      {{- if $mounts }}
      volumes:
        {{- if .Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "tls.enabled needs tls.secretName" .Values.tls.secretName }}
        {{- end }}
        {{- if $tenants }}
        - name: tenants
          secret:
            secretName: {{ $tenants }}
        {{- end }}
        {{- if $pacs }}
        - name: pacs
          secret:
            secretName: {{ $pacs }}
        {{- end }}
        {{- with include "mediround.modelVolumes" . }}{{ . | nindent 8 }}{{ end }}
      {{- end }}
      {{- with .Values.front.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.front.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
