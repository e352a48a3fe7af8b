{{/* Names, labels, images and the endpoints of each component. */}}

{{- define "journey.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-journey, or <release> when it already says "journey". */}}
{{- define "journey.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "ctx" $ "component" "kafka") */}}
{{- define "journey.component.fullname" -}}
{{- printf "%s-%s" (include "journey.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "journey.selectorLabels" -}}
app.kubernetes.io/name: {{ include "journey.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "journey.labels" -}}
{{ include "journey.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: journey
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* image: (dict "ctx" $ "image" .Values.producer.image) */}}
{{- define "journey.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}


{{- define "journey.kafka.fullname" -}}
{{- include "journey.component.fullname" (dict "ctx" . "component" "kafka") -}}
{{- end -}}
{{- define "journey.kafka.headless" -}}
{{- printf "%s-headless" (include "journey.kafka.fullname" .) -}}
{{- end -}}

{{/* host:port list the Kafka clients bootstrap from. */}}
{{- define "journey.kafka.bootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s:9092" (include "journey.kafka.fullname" .) -}}
{{- else -}}
{{- required "kafka.external.bootstrapServers is required when kafka.enabled=false" .Values.kafka.external.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* Fully qualified DNS name of Kafka node $i: (dict "ctx" $ "i" 0) */}}
{{- define "journey.kafka.nodeHost" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "journey.kafka.fullname" .ctx) (int .i) (include "journey.kafka.headless" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{/* KRaft cluster id: given, or 21 hex digits of sha256(namespace/release) + "A" (22 base64url
     characters whose unused low bits are zero, i.e. a valid 16-byte id), stable across upgrades. */}}
{{- define "journey.kafka.clusterId" -}}
{{- if .Values.kafka.clusterId -}}
{{- .Values.kafka.clusterId -}}
{{- else -}}
{{- printf "%sA" (printf "%s/%s" .Release.Namespace .Release.Name | sha256sum | trunc 21) -}}
{{- end -}}
{{- end -}}

{{- define "journey.collector.fullname" -}}
{{- include "journey.component.fullname" (dict "ctx" . "component" "collector") -}}
{{- end -}}

{{- define "journey.collector.otlpEndpoint" -}}
{{- if .Values.collector.enabled -}}
{{- printf "http://%s:4317" (include "journey.collector.fullname" .) -}}
{{- else -}}
{{- required "collector.external.otlpEndpoint is required when collector.enabled=false" .Values.collector.external.otlpEndpoint -}}
{{- end -}}
{{- end -}}

{{- define "journey.collector.healthUrl" -}}
{{- if .Values.collector.enabled -}}
{{- printf "http://%s:13133/" (include "journey.collector.fullname" .) -}}
{{- else -}}
{{- .Values.collector.external.healthUrl -}}
{{- end -}}
{{- end -}}

{{- define "journey.zipkin.fullname" -}}
{{- include "journey.component.fullname" (dict "ctx" . "component" "zipkin") -}}
{{- end -}}

{{- define "journey.zipkin.url" -}}
{{- if .Values.zipkin.enabled -}}
{{- printf "http://%s:%d" (include "journey.zipkin.fullname" .) (int .Values.zipkin.service.port) -}}
{{- else -}}
{{- required "zipkin.external.url is required when zipkin.enabled=false" .Values.zipkin.external.url | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{- define "journey.producer.url" -}}
{{- printf "http://%s:%d" (include "journey.component.fullname" (dict "ctx" . "component" "producer")) (int .Values.producer.service.port) -}}
{{- end -}}

{{- define "journey.journeyctl.serviceAccountName" -}}
{{- if .Values.journeyctl.serviceAccount.create -}}
{{- default (include "journey.component.fullname" (dict "ctx" . "component" "journeyctl")) .Values.journeyctl.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.journeyctl.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "journey.collector.serviceAccountName" -}}
{{- if .Values.collector.serviceAccount.create -}}
{{- default (include "journey.collector.fullname" .) .Values.collector.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.collector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "journey.kafka.saslSecretName" -}}
{{- if .Values.kafka.client.sasl.existingSecret -}}
{{- .Values.kafka.client.sasl.existingSecret -}}
{{- else -}}
{{- printf "%s-kafka-client" (include "journey.fullname" .) -}}
{{- end -}}
{{- end -}}
