{{/* Chart name, truncated to 63 characters (DNS label limit). */}}
{{- define "cifar-hpo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> if it already contains the chart name. Truncated to 40
characters so that Job names (<fullname>-t<trial id>) stay within 63. */}}
{{- define "cifar-hpo.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cifar-hpo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cifar-hpo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cifar-hpo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cifar-hpo.labels" -}}
helm.sh/chart: {{ include "cifar-hpo.chart" . }}
{{ include "cifar-hpo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cifar-hpo.s3Secret" -}}
{{- if .Values.store.existingSecret }}{{ .Values.store.existingSecret }}
{{- else if .Values.store.accessKeyId }}{{ include "cifar-hpo.fullname" . }}-s3
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given (an immutable reference), else repository:tag. */}}
{{- define "cifar-hpo.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security Standard, for every container. */}}
{{- define "cifar-hpo.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The operator's own settings (the store, the trials' program and Job defaults): its pod restarts when they
change (checksum/config), not when a Search's budget does. */}}
{{- define "cifar-hpo.operatorConfig" -}}
{{- $full := include "cifar-hpo.fullname" . -}}
store:
  uri: {{ printf "s3://%s/%s" .Values.store.bucket (trimAll "/" .Values.store.prefix) | trimSuffix "/" | quote }}
  endpointUrl: {{ .Values.store.endpoint | default nil | toJson }}
  region: {{ .Values.store.region | default nil | toJson }}
  addressingStyle: {{ .Values.store.addressingStyle | quote }}
  checksums: {{ .Values.store.checksums | quote }}
  caBundle: {{ if .Values.store.caBundle.configMap }}{{ printf "/etc/cifar-hpo/ca/%s" .Values.store.caBundle.key | quote }}{{ else }}null{{ end }}
trial:
  command: {{ .Values.trainer.command | default (list "python" "-m" "trainer") | toJson }}
  data: {{ .Values.trainer.data | quote }}
  dataSha256: {{ .Values.trainer.dataSha256 | default nil | toJson }}
  epochs: {{ .Values.trainer.epochs }}
  extraArgs: {{ .Values.trainer.extraArgs | toJson }}
controller:
  logFormat: {{ .Values.controller.logFormat }}
  metricsPort: {{ .Values.controller.metricsPort }}
  dashboardPort: {{ .Values.controller.dashboard.port | mul (ternary 1 0 .Values.controller.dashboard.enabled) }}
  dashboardHosts: {{ .Values.controller.dashboard.hosts | toJson }}
kube:
  namespace: {{ .Release.Namespace | quote }}
  release: {{ $full | quote }}
  instance: {{ .Release.Name | quote }}
  image: {{ include "cifar-hpo.image" (dict "image" .Values.trainer.image "appVersion" .Chart.AppVersion) | quote }}
  imagePullPolicy: {{ .Values.trainer.image.pullPolicy }}
  imagePullSecrets: {{ .Values.imagePullSecrets | toJson }}
  gpuResource: {{ .Values.trainer.gpu.resourceName | quote }}
  gpuCount: {{ .Values.trainer.gpu.count }}
  requests: {{ .Values.trainer.resources.requests | default dict | toJson }}
  limits: {{ .Values.trainer.resources.limits | default dict | toJson }}
  nodeSelector: {{ .Values.trainer.nodeSelector | toJson }}
  tolerations: {{ .Values.trainer.tolerations | toJson }}
  affinity: {{ .Values.trainer.affinity | toJson }}
  priorityClassName: {{ .Values.trainer.priorityClassName | default nil | toJson }}
  serviceAccountName: {{ printf "%s-trial" $full | quote }}
  s3SecretName: {{ include "cifar-hpo.s3Secret" . | default nil | toJson }}
  trialAccess: {{ .Values.store.trialAccess | quote }}
  caConfigMap: {{ .Values.store.caBundle.configMap | default nil | toJson }}
  backoffLimit: {{ .Values.trainer.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.trainer.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ .Values.trainer.ttlSecondsAfterFinished }}
  terminationGraceSeconds: {{ .Values.trainer.terminationGraceSeconds }}
  startTimeoutSeconds: {{ .Values.trainer.startTimeoutSeconds }}
  cacheSizeLimit: {{ .Values.trainer.cacheSizeLimit | quote }}
  dataCacheClaim: {{ .Values.trainer.dataCache.existingClaim | default nil | toJson }}
  dataCacheHostPath: {{ .Values.trainer.dataCache.hostPath | default nil | toJson }}
  leaseName: {{ printf "%s-controller" $full | quote }}
  leaseSeconds: {{ .Values.controller.leaseSeconds }}
  resyncSeconds: {{ .Values.controller.resyncSeconds }}
policy:
  images: {{ .Values.policy.images | toJson }}
  allowCustomCommand: {{ .Values.policy.allowCustomCommand }}
  maxGpusPerTrial: {{ .Values.policy.maxGpusPerTrial }}
  maxParallelism: {{ .Values.policy.maxParallelism }}
  maxActiveDeadlineSeconds: {{ .Values.policy.maxActiveDeadlineSeconds | int64 }}
  priorityClassNames: {{ .Values.policy.priorityClassNames | toJson }}
  nodeSelectors: {{ .Values.policy.nodeSelectors | toJson }}
  tolerations: {{ .Values.policy.tolerations | toJson }}
  allowAffinity: {{ .Values.policy.allowAffinity }}
  dataSchemes: {{ .Values.policy.dataSchemes | toJson }}
  dataHosts: {{ .Values.policy.dataHosts | toJson }}
  allowPrivateAddresses: {{ .Values.policy.allowPrivateAddresses }}
  maxDataBytes: {{ .Values.policy.maxDataBytes | int64 }}
  requireDataSha256: {{ .Values.policy.requireDataSha256 }}
  dataS3Prefix: {{ .Values.policy.dataS3Prefix | quote }}
  stagingMemoryBytes: {{ .Values.policy.stagingMemoryBytes | int64 }}
  stagingSeconds: {{ .Values.policy.stagingSeconds | int64 }}
  minCheckSeconds: {{ .Values.policy.minCheckSeconds }}
  maxTerminationGraceSeconds: {{ .Values.policy.maxTerminationGraceSeconds | int64 }}
  maxResources: {{ .Values.policy.maxResources | toJson }}
{{- end }}

{{- /* Any address but link-local (cloud metadata: 169.254.169.254, fd00:ec2::254), unless CIDRs are given. */ -}}
{{- define "cifar-hpo.egressTo" -}}
{{- if .cidrs }}
{{- range .cidrs }}
- ipBlock:
    cidr: {{ . | quote }}
{{- end }}
{{- else }}
- ipBlock:
    cidr: "0.0.0.0/0"
    except: ["169.254.0.0/16"{{ if .private }}, "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"{{ end }}]
- ipBlock:
    cidr: "::/0"
    except: ["fe80::/10", "fd00:ec2::/32"{{ if .private }}, "fc00::/7", "::1/128"{{ end }}]
{{- end }}
{{- end }}
{{- define "cifar-hpo.ports" -}}
{{- range . }}
- port: {{ . }}
  protocol: TCP
{{- end }}
{{- end }}
