{{/* Environment variables the services and journeyctl share: downward API, OTEL_*, Kafka client. */}}

{{/* Downward-API variables used only to build other variables by $(NAME) expansion. */}}
{{- define "journey.env.downward" -}}
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: K8S_POD_UID
  valueFrom: {fieldRef: {fieldPath: metadata.uid}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- end -}}

{{/* OpenTelemetry SDK variables of a service: (dict "ctx" $ "service" "producer" "container" "producer") */}}
{{- define "journey.env.otel" -}}
{{- $ctx := .ctx -}}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ include "journey.collector.otlpEndpoint" $ctx | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: grpc
{{- $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE)" "k8s.pod.ip=$(K8S_POD_IP)" "k8s.pod.uid=$(K8S_POD_UID)" "k8s.node.name=$(K8S_NODE_NAME)" (printf "k8s.container.name=%s" .container) (printf "k8s.deployment.name=%s" (include "journey.component.fullname" (dict "ctx" $ctx "component" .container))) -}}
{{- range $k, $v := $ctx.Values.app.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
- name: RUST_LOG
  value: {{ $ctx.Values.app.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ $ctx.Values.app.logFormat | quote }}
{{- end -}}

{{/* Kafka client variables (bootstrap, security) for services and journeyctl. */}}
{{- define "journey.env.kafkaClient" -}}
{{- $c := .Values.kafka.client -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "journey.kafka.bootstrap" . | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $c.securityProtocol | quote }}
- name: KAFKA_MESSAGE_MAX_BYTES
  value: {{ .Values.kafka.maxMessageBytes | int64 | quote }}
{{- if hasPrefix "SASL_" $c.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ required "kafka.client.sasl.mechanism is required with a SASL_* securityProtocol" $c.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ required "kafka.client.sasl.username is required with a SASL_* securityProtocol" $c.sasl.username | quote }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "journey.kafka.saslSecretName" . }}
      key: {{ $c.sasl.passwordKey }}
{{- end }}
{{- if and (hasSuffix "SSL" $c.securityProtocol) $c.tls.caSecret }}
- name: KAFKA_SSL_CA_LOCATION
  value: /etc/journey/kafka-ca/{{ $c.tls.caKey }}
{{- end }}
{{- end -}}
