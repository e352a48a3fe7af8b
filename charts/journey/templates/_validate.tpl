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
