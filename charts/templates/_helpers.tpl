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

{{- define "cifar-hpo.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
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
