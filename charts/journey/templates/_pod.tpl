{{/* Blocks every pod of the chart shares: security contexts, volumes, the journeyctl init
container and topics sidecar, memory limits, scheduling. */}}

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

{{/*
Where a pod may run: the component's nodeSelector, tolerations and affinity, each only when set.
Called with the component's values (for example `.Values.kafka`) at the pod spec's indentation.
*/}}
{{- define "journey.scheduling" -}}
{{- $placement := pick . "nodeSelector" "tolerations" "affinity" -}}
{{- range $key, $value := $placement }}{{ if not $value }}{{ $_ := unset $placement $key }}{{ end }}{{ end -}}
{{- with $placement }}{{ toYaml . }}{{ end -}}
{{- end }}
