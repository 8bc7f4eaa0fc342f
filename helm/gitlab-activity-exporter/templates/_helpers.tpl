{{/* Chart name, truncated to 63 characters. */}}
{{- define "gae.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "gae.fullname" -}}
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

{{/* The StatefulSet's name: its pods carry the label controller-revision-hash=<name>-<hash
of up to 10 characters>, so the name stays within 52 characters. */}}
{{- define "gae.statefulsetName" -}}
{{- include "gae.fullname" . | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* The headless Service of the StatefulSet, within 63 characters. */}}
{{- define "gae.headlessName" -}}
{{- printf "%s-headless" (include "gae.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* The Deployment's claim for the state volume (persistence without sharding). */}}
{{- define "gae.claimName" -}}
{{- default (printf "%s-state" (include "gae.fullname" . | trunc 57 | trimSuffix "-")) .Values.persistence.existingClaim }}
{{- end }}

{{/* Where the state file lives: a claim (persistence) or an emptyDir. */}}
{{- define "gae.stateDir" -}}
/var/lib/gitlab-activity-exporter
{{- end }}

{{/* The token comes from a file (config.gitlab.token_file) instead of a Secret. */}}
{{- define "gae.tokenFromFile" -}}
{{- if (.Values.config.gitlab | default dict).token_file }}true{{ end }}
{{- end }}

{{/* The configuration file: the values' config, scan.state_file on the state volume
unless set there. */}}
{{- define "gae.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $scan := get $config "scan" | default dict }}
{{- if not (hasKey $scan "state_file") }}
{{- $_ := set $scan "state_file" (printf "%s/state.db" (include "gae.stateDir" .)) }}
{{- end }}
{{- $_ := set $config "scan" $scan }}
{{- toYaml $config }}
{{- end }}

{{/* Selector labels. */}}
{{- define "gae.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gae.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "gae.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gae.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gae.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gae.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gae.secretName" -}}
{{- default (include "gae.fullname" .) .Values.gitlab.existingSecret }}
{{- end }}

{{/* The pod template of the Deployment and the StatefulSet. */}}
{{- define "gae.podTemplate" -}}
metadata:
  labels:
    {{- include "gae.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "gae.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: "{{ required "set image.repository to the image you built and pushed (docs/deploy.md: Build and push the image)" .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config.file=/etc/gitlab-activity-exporter/config.yml
        - --web.listen-address=:{{ .Values.service.port }}
        - --log.level={{ .Values.logLevel }}
        - --log.format={{ .Values.logFormat }}
        {{- if .Values.sharding.enabled }}
        - --shard.count={{ .Values.sharding.replicas }}
        - --shard.from-hostname
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- if not (include "gae.tokenFromFile" .) }}
        - name: GITLAB_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "gae.secretName" . }}
              key: {{ .Values.gitlab.existingSecretKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/gitlab-activity-exporter
          readOnly: true
        # writable: the state file (and SQLite's temporary files) on a read-only root
        - name: state
          mountPath: {{ include "gae.stateDir" . }}
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "gae.fullname" . }}
    - name: tmp
      emptyDir: {}
    {{- if not (and .Values.persistence.enabled .Values.sharding.enabled) }}
    - name: state
      {{- if .Values.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ include "gae.claimName" . }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
