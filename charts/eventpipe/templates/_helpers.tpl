{{- define "eventpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "eventpipe.fullname" -}}
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

{{- define "eventpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "eventpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eventpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "eventpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eventpipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image value as a reference: [registry/]repository, then @digest, or :tag (default: the
chart's appVersion). */}}
{{- define "eventpipe.image" -}}
{{- $repository := .image.repository }}
{{- with .image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .appVersion .image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the chart creates for the Jobs in each watched namespace. */}}
{{- define "eventpipe.jobServiceAccountName" -}}
{{- default (printf "%s-jobs" (include "eventpipe.fullname" .)) .Values.jobServiceAccount.name }}
{{- end }}

{{/* jobDefaults, with the chart-made Jobs' ServiceAccount when there is one, as JSON. */}}
{{- define "eventpipe.jobDefaults" -}}
{{- $defaults := deepCopy .Values.jobDefaults }}
{{- if .Values.jobServiceAccount.create }}
{{- $_ := set $defaults "serviceAccountName" (default (include "eventpipe.jobServiceAccountName" .) $defaults.serviceAccountName) }}
{{- end }}
{{- $defaults | toJson }}
{{- end }}

{{/* The service accounts pipelines may name: allowedServiceAccounts, or the chart-made Jobs'
ServiceAccount alone when the chart makes one; as a JSON list (empty: any). */}}
{{- define "eventpipe.allowedServiceAccounts" -}}
{{- if .Values.allowedServiceAccounts }}
{{- .Values.allowedServiceAccounts | toJson }}
{{- else if .Values.jobServiceAccount.create }}
{{- list (include "eventpipe.jobServiceAccountName" .) | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/* Whose identity reads pipelines' S3 locations: s3Identity.mode, or pipeline for a namespaced
installation and operator for a cluster-wide one. */}}
{{- define "eventpipe.s3IdentityMode" -}}
{{- $namespaces := include "eventpipe.watchNamespaces" . | fromJsonArray }}
{{- .Values.s3Identity.mode | default (ternary "pipeline" "operator" (gt (len $namespaces) 0)) }}
{{- end }}

{{/* The watched namespaces as a JSON list; empty for all namespaces. */}}
{{- define "eventpipe.watchNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces }}
{{- with .Values.watchNamespace }}{{ $namespaces = append $namespaces . }}{{ end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/* The name of a cluster-scoped object of the release: two releases of the chart in different
namespaces must not share one. */}}
{{- define "eventpipe.clusterName" -}}
{{- printf "%s-%s" (include "eventpipe.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when leader election is on: forced, or needed by more than one replica. */}}
{{- define "eventpipe.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* The rules of a file under files/rbac/, which the operator's tests also read. */}}
{{- define "eventpipe.rules" -}}
{{- required (printf "chart file %s is missing" .path) (.root.Files.Get .path) }}
{{- end }}
