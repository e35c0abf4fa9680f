{{- define "throng.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "throng.headless" -}}
{{- printf "%s-headless" (include "throng.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "throng.secretName" -}}
{{- default (include "throng.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "throng.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "throng.labels" -}}
{{ include "throng.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "throng.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The peer list: every pod's stable DNS name, this one included. */}}
{{- define "throng.peers" -}}
{{- $full := include "throng.fullname" . -}}
{{- $hl := include "throng.headless" . -}}
{{- $port := int .Values.cluster.port -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $peers = append $peers (printf "%s-%d.%s.$(POD_NAMESPACE).svc:%d" $full $i $hl $port) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{- define "throng.listen" -}}
{{- if gt (int .) 0 }}{{ printf ":%d" (int .) }}{{ end -}}
{{- end -}}
