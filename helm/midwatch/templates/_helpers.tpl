{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "midwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name unless the release name already contains it.
*/}}
{{- define "midwatch.fullname" -}}
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

{{- define "midwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "midwatch.labels" -}}
helm.sh/chart: {{ include "midwatch.chart" . }}
{{ include "midwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: midwatch
{{- end }}

{{- define "midwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "midwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels / selector labels for one component. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "midwatch.componentLabels" -}}
{{ include "midwatch.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "midwatch.componentSelectorLabels" -}}
{{ include "midwatch.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "midwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "midwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "midwatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if or (not $tag) (eq $tag "latest") }}
{{- fail "image.tag must be a pinned version (not empty, not latest)" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "midwatch.brokerPort" -}}
{{- if .Values.broker.port }}
{{- .Values.broker.port }}
{{- else if eq .Values.broker.type "rabbitmq" }}
{{- 5672 }}
{{- else }}
{{- 6379 }}
{{- end }}
{{- end }}

{{/*
Non-secret configuration as a flat YAML map (ConfigMap data; the migration Job inlines it).
*/}}
{{- define "midwatch.configData" -}}
MIDWATCH_ENV: {{ .Values.config.env | quote }}
MIDWATCH_HOST: "0.0.0.0"
MIDWATCH_PORT: {{ .Values.api.port | quote }}
MIDWATCH_DASHBOARD_PORT: {{ .Values.dashboard.port | quote }}
MIDWATCH_WORKER_THREADS: {{ .Values.worker.threads | quote }}
MIDWATCH_SHUTDOWN_GRACE_S: {{ .Values.worker.shutdownGraceSeconds | quote }}
MIDWATCH_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
MIDWATCH_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
MIDWATCH_ALLOW_LOOPBACK_EGRESS: {{ .Values.config.allowLoopbackEgress | toString | quote }}
MIDWATCH_DATA_DIR: {{ .Values.config.dataDir | quote }}
MIDWATCH_OTLP_ENDPOINT: {{ .Values.config.otlpEndpoint | quote }}
MIDWATCH_METRICS_REFRESH_SECONDS: {{ .Values.config.metricsRefreshSeconds | quote }}
HOME: "/tmp"
{{- end }}

{{/*
Secret environment variables, by reference only (secretKeyRef), never by value.
*/}}
{{- define "midwatch.secretEnv" -}}
{{- $s := .Values.existingSecret -}}
- name: MIDWATCH_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.keys.databaseUrl }}
- name: MIDWATCH_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.keys.brokerUrl }}
- name: MIDWATCH_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.keys.masterKey }}
- name: MIDWATCH_OPERATOR_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.keys.operatorKey }}
      optional: true
- name: MIDWATCH_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $s.name }}
      key: {{ $s.keys.metricsToken }}
      optional: true
{{- end }}

{{/*
Restricted container security context (Pod Security Standard "restricted").
*/}}
{{- define "midwatch.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod-level fields shared by every pod. Call with (dict "ctx" $ "component" "api"),
optionally with "serviceAccountName" to override the ServiceAccount.
*/}}
{{- define "midwatch.podCommon" -}}
{{- $ := .ctx -}}
serviceAccountName: {{ .serviceAccountName | default (include "midwatch.serviceAccountName" $) }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ $.Values.securityContext.runAsUser }}
  runAsGroup: {{ $.Values.securityContext.runAsGroup }}
  fsGroup: {{ $.Values.securityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ $.Values.tmpSizeLimit }}
{{- end }}

{{/*
Pod template metadata. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "midwatch.podMetadata" -}}
{{- $ := .ctx -}}
labels:
  {{- include "midwatch.componentSelectorLabels" . | nindent 2 }}
  app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
  {{- with $.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "midwatch.configData" $ | sha256sum }}
  {{- with $.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Container fields shared by every container (image, security, env, /tmp mount). Call with
(dict "ctx" $) or, for worker and scheduler, (dict "ctx" $ "healthPort" <port>): their own MIDWATCH_HEALTH_PORT;
the API adds "apiWorkersFromCpuLimit" true: MIDWATCH_API_WORKERS from its CPU limit.
*/}}
{{- define "midwatch.containerCommon" -}}
{{- $ := .ctx -}}
image: {{ include "midwatch.image" $ }}
imagePullPolicy: {{ $.Values.image.pullPolicy }}
securityContext:
  {{- include "midwatch.containerSecurityContext" $ | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "midwatch.fullname" $ }}
env:
  {{- include "midwatch.secretEnv" $ | nindent 2 }}
  {{- with .healthPort }}
  - name: MIDWATCH_HEALTH_PORT
    value: {{ . | quote }}
  {{- end }}
  {{- if .apiWorkersFromCpuLimit }}
  # one API process per CPU of the container's limit (rounded up), whatever the node has
  - name: MIDWATCH_API_WORKERS
    valueFrom:
      resourceFieldRef:
        containerName: api
        resource: limits.cpu
        divisor: "1"
  {{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
Guard rails that the JSON schema cannot express.
*/}}
{{- define "midwatch.validate" -}}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (int .Values.worker.shutdownGraceSeconds) }}
{{- fail "worker.terminationGracePeriodSeconds must be greater than worker.shutdownGraceSeconds" }}
{{- end }}
{{- if not (or (eq .Values.config.dataDir "/tmp") (hasPrefix "/tmp/" .Values.config.dataDir)) }}
{{- fail "config.dataDir must be under /tmp (the only writable path)" }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas)) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- if or (eq (int .Values.worker.healthPort) (int .Values.api.port)) (eq (int .Values.scheduler.healthPort) (int .Values.api.port)) }}
{{- fail "worker.healthPort and scheduler.healthPort must differ from api.port" }}
{{- end }}
{{- end }}

{{/*
Labels of one alert: its severity and monitoring.prometheusRule.alertLabels. Call with (dict "ctx" $ "severity" "warning").
*/}}
{{- define "midwatch.alertLabels" -}}
severity: {{ .severity }}
{{- with .ctx.Values.monitoring.prometheusRule.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
