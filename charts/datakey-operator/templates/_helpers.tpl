{{/* Name of the chart, or nameOverride. */}}
{{- define "datakey-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base of every object's name. The release name alone when it already contains
the chart name (the documented `helm install datakey-operator ...`), so the
objects are called datakey-operator, datakey-operator-webhook, ...
Truncated to 47 so the longest suffix (-webhook-tls) still fits 63.
*/}}
{{- define "datakey-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "datakey-operator.serviceAccountName" -}}
{{ include "datakey-operator.fullname" . }}
{{- end }}

{{/* Service of the webhook and of key delivery to the pods' agents (443 → 9443). */}}
{{- define "datakey-operator.webhookService" -}}
{{ include "datakey-operator.fullname" . }}-webhook
{{- end }}

{{/* Service of the KMS Instance API (kmsInstanceApi.port → 9444). */}}
{{- define "datakey-operator.kmsInstanceService" -}}
{{ include "datakey-operator.fullname" . }}-kms-instance
{{- end }}

{{- define "datakey-operator.metricsService" -}}
{{ include "datakey-operator.fullname" . }}-metrics
{{- end }}

{{/* Cluster-scoped: named after the release so two releases never share it. */}}
{{- define "datakey-operator.webhookConfiguration" -}}
{{ include "datakey-operator.fullname" . }}
{{- end }}

{{/* Secret the operator writes its webhook serving certificate into. */}}
{{- define "datakey-operator.webhookSecret" -}}
{{ include "datakey-operator.fullname" . }}-webhook-tls
{{- end }}

{{/* The operator image; the agent init container injected into pods runs it too. */}}
{{- define "datakey-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "datakey-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datakey-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "datakey-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "datakey-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
