{{/* ---------------------------------------------------------------- names, labels */}}

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

{{/* ---------------------------------------------------------------- endpoints */}}

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

{{/* ---------------------------------------------------------------- security */}}

{{/* Restricted-compliant pod securityContext: (dict "uid" 65532 "override" .Values.x.podSecurityContext) */}}
{{- define "journey.podSecurityContext" -}}
{{- $base := dict "runAsNonRoot" true "runAsUser" (int .uid) "runAsGroup" (int .uid) "fsGroup" (int .uid) "fsGroupChangePolicy" "OnRootMismatch" "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $base (deepCopy (.override | default dict))) -}}
{{- end -}}

{{/* Restricted-compliant container securityContext: (dict "override" .Values.x.securityContext) */}}
{{- define "journey.securityContext" -}}
{{- $base := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $base (deepCopy (.override | default dict))) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- environment */}}

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

{{- define "journey.kafka.caMounted" -}}
{{- if and (hasSuffix "SSL" .Values.kafka.client.securityProtocol) .Values.kafka.client.tls.caSecret -}}true{{- end -}}
{{- end -}}

{{/* Volumes every service pod has: the Kafka CA (optional), topics, journeyctl's API token. */}}
{{- define "journey.app.volumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
- name: topics
  configMap:
    name: {{ include "journey.component.fullname" (dict "ctx" . "component" "topics") }}
{{- if include "journey.kafka.caMounted" . }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.client.tls.caSecret }}
    items: [{key: {{ .Values.kafka.client.tls.caKey }}, path: {{ .Values.kafka.client.tls.caKey }}}]
{{- end }}
{{ include "journey.journeyctl.tokenVolume" . }}
{{- end -}}

{{/* The API token only journeyctl's container mounts (the pod does not automount one, so the
     services themselves have no Kubernetes credentials). */}}
{{- define "journey.journeyctl.tokenVolume" -}}
- name: kube-api-access
  projected:
    # 0444 (written in decimal: YAML 1.1 and 1.2 read a leading zero differently)
    defaultMode: 292
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]
{{- end -}}

{{- define "journey.kafka.caMount" -}}
{{- if include "journey.kafka.caMounted" . -}}
- name: kafka-ca
  mountPath: /etc/journey/kafka-ca
  readOnly: true
{{- end -}}
{{- end -}}

{{/* The journeyctl init container of a service pod. */}}
{{- define "journey.journeyctl.init" -}}
{{- $v := .Values -}}
{{- $wait := list -}}
{{- if $v.kafka.enabled }}{{ $wait = append $wait (printf "statefulset/%s" (include "journey.kafka.fullname" .)) }}{{ end -}}
{{- if $v.collector.enabled }}{{ $wait = append $wait (printf "deployment/%s" (include "journey.collector.fullname" .)) }}{{ end -}}
{{- if $v.zipkin.enabled }}{{ $wait = append $wait (printf "deployment/%s" (include "journey.zipkin.fullname" .)) }}{{ end -}}
- name: journeyctl-init
  image: {{ include "journey.image" (dict "ctx" . "image" $v.journeyctl.image) }}
  imagePullPolicy: {{ $v.journeyctl.image.pullPolicy }}
  args: [init]
  env:
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    {{- if $wait }}
    - name: WAIT_WORKLOADS
      value: {{ join "," $wait | quote }}
    {{- end }}
    {{- include "journey.env.kafkaClient" . | nindent 4 }}
    {{- $brokers := ternary $v.kafka.replicas $v.kafka.external.expectedBrokers $v.kafka.enabled }}
    {{- if gt (int $brokers) 0 }}
    - name: KAFKA_EXPECTED_BROKERS
      value: {{ $brokers | quote }}
    {{- end }}
    {{- with include "journey.collector.healthUrl" . }}
    - name: COLLECTOR_HEALTH_URL
      value: {{ . | quote }}
    {{- end }}
    - name: ZIPKIN_URL
      value: {{ include "journey.zipkin.url" . | quote }}
    - name: WAIT_TIMEOUT
      value: {{ $v.journeyctl.waitTimeout | quote }}
    {{- if $v.journeyctl.seedTopics }}
    - name: TOPICS_FILE
      value: /etc/journey/topics/topics.yaml
    {{- end }}
    - name: RUST_LOG
      value: {{ $v.app.logLevel | quote }}
    - name: LOG_FORMAT
      value: {{ $v.app.logFormat | quote }}
  resources:
    {{- toYaml $v.journeyctl.resources | nindent 4 }}
  securityContext:
    {{- include "journey.securityContext" (dict "override" $v.journeyctl.securityContext) | nindent 4 }}
  volumeMounts:
    - name: topics
      mountPath: /etc/journey/topics
      readOnly: true
    - name: kube-api-access
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- with include "journey.kafka.caMount" . }}{{ . | nindent 4 }}{{ end }}
{{- end -}}

{{/* The Kafka pod's `topics` sidecar (a native sidecar: an init container that keeps running):
     seeds the topics each time the pod starts, then every reseedInterval. A Kafka pod on an
     emptyDir starts empty; the services, already running, get their topics back. No API token. */}}
{{- define "journey.kafka.topicsSidecar" -}}
{{- $v := .Values -}}
- name: topics
  image: {{ include "journey.image" (dict "ctx" . "image" $v.journeyctl.image) }}
  imagePullPolicy: {{ $v.journeyctl.image.pullPolicy }}
  restartPolicy: Always
  args: [init, --keep-seeding, {{ $v.journeyctl.reseedInterval | quote }}]
  env:
    {{- include "journey.env.kafkaClient" . | nindent 4 }}
    - name: KAFKA_EXPECTED_BROKERS
      value: {{ $v.kafka.replicas | quote }}
    - name: WAIT_TIMEOUT
      value: {{ $v.journeyctl.waitTimeout | quote }}
    - name: TOPICS_FILE
      value: /etc/journey/topics/topics.yaml
    - name: RUST_LOG
      value: {{ $v.app.logLevel | quote }}
    - name: LOG_FORMAT
      value: {{ $v.app.logFormat | quote }}
  resources:
    {{- toYaml $v.journeyctl.resources | nindent 4 }}
  securityContext:
    {{- include "journey.securityContext" (dict "override" $v.journeyctl.securityContext) | nindent 4 }}
  volumeMounts:
    - name: topics
      mountPath: /etc/journey/topics
      readOnly: true
{{- end -}}

{{/* Checks that each topic a service uses is seeded, and that replication fits the brokers. */}}
{{- define "journey.validate" -}}
{{- $v := .Values -}}
{{- $names := list -}}
{{- range $v.topics }}
{{- $names = append $names .name -}}
{{- if and $v.kafka.enabled (gt (int .replicationFactor) (int $v.kafka.replicas)) }}
{{- fail (printf "topics: %s has replicationFactor %d but kafka.replicas is %d" .name (int .replicationFactor) (int $v.kafka.replicas)) }}
{{- end }}
{{- end }}
{{- if $v.journeyctl.seedTopics }}
{{- range (list $v.producer.topic $v.relay.inputTopic $v.relay.outputTopic $v.relay.dlqTopic $v.sink.inputTopic $v.sink.dlqTopic) }}
{{- if not (has . $names) }}
{{- fail (printf "topic %q is used by a service but is not in topics (journeyctl seeds only that list)" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.kafka.enabled (not (has (int $v.kafka.replicas) (list 1 3 5))) }}
{{- fail "kafka.replicas must be 1, 3 or 5 (a KRaft quorum needs an odd number of voters)" }}
{{- end }}
{{- if and (hasPrefix "SASL_" $v.kafka.client.securityProtocol) (not $v.kafka.client.sasl.existingSecret) (not $v.kafka.client.sasl.password) }}
{{- fail "kafka.client.sasl: set existingSecret (or password) with a SASL_* securityProtocol" }}
{{- end }}
{{- end -}}

{{/* 80% of a memory quantity (any Kubernetes form: 512Mi, 1.5Gi, 1G, 536870912, 5e8, a
number) as a Go GOMEMLIMIT in whole MiB ("204MiB"), or bytes below 1 MiB; empty when it is not
a quantity. */}}
{{- define "journey.goMemLimit" -}}
{{- $q := toString . -}}
{{- $num := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?" $q -}}
{{- $scale := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- $suffix := trimPrefix $num $q -}}
{{- if and $num (hasKey $scale $suffix) -}}
{{- $limit := floor (mulf (float64 $num) (get $scale $suffix) 0.8) -}}
{{- if ge $limit 1048576.0 -}}
{{- printf "%dMiB" (int64 (floor (divf $limit 1048576))) -}}
{{- else -}}
{{- printf "%dB" (int64 $limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}
