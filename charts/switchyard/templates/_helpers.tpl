{{/* Names ---------------------------------------------------------------- */}}

{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end -}}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.adminTokenSecretName" -}}
{{- default (printf "%s-admin-token" (include "switchyard.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{/* The TLS Secret: yours, or the one cert-manager fills; empty for none. */}}
{{- define "switchyard.tlsSecretName" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "switchyard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Paths inside the pod. */}}
{{- define "switchyard.configDir" -}}/etc/switchyard{{- end -}}
{{- define "switchyard.tlsDir" -}}/run/secrets/switchyard/tls{{- end -}}
{{- define "switchyard.adminTokenDir" -}}/run/secrets/switchyard/admin{{- end -}}
{{- define "switchyard.ticketKeyDir" -}}/run/secrets/switchyard/tickets{{- end -}}

{{/* Snippets for the TOML configuration (used through tpl in .Values.config). */}}

{{- define "switchyard.tlsCertificate" -}}
{{- if .Values.tls.ticketKeySecret.name -}}
[tls]
ticket_key_file = "{{ include "switchyard.ticketKeyDir" . }}/{{ .Values.tls.ticketKeySecret.key }}"

{{ end -}}
{{- if include "switchyard.tlsSecretName" . -}}
[tls.certificate.default]
cert = "{{ include "switchyard.tlsDir" . }}/tls.crt"
key = "{{ include "switchyard.tlsDir" . }}/tls.key"
default = true
{{- else -}}
# No certificate configured (tls.existingSecret / tls.certManager): the proxy
# presents a generated self-signed certificate.
{{- end -}}
{{- end -}}

{{- define "switchyard.adminTable" -}}
[admin]
bind = "0.0.0.0:{{ .Values.admin.port }}"
tls = "{{ .Values.admin.tls }}"
{{- if eq .Values.admin.tls "plain" }}
allow_plaintext = true
{{- end }}
bearer_token_file = "{{ include "switchyard.adminTokenDir" . }}/{{ .Values.adminToken.key }}"
{{- end -}}

{{/* The rendered configuration file. */}}
{{- define "switchyard.config" -}}
{{- tpl .Values.config . -}}
{{- end -}}

{{/* server.shutdown_grace of the rendered configuration, in whole seconds
     (rounded up); 30 (the proxy's default) when the key is absent. */}}
{{- define "switchyard.shutdownGraceSeconds" -}}
{{- $m := regexFind "(?m)^[ \\t]*shutdown_grace[ \\t]*=[ \\t]*\"[ \\t]*[0-9]+[ \\t]*(ms|s|m|h|d)[ \\t]*\"" (include "switchyard.config" .) -}}
{{- if not $m -}}
30
{{- else -}}
{{- $v := regexFind "\"[ \\t]*[0-9]+[ \\t]*[a-z]+" $m -}}
{{- $n := regexFind "[0-9]+" $v | atoi -}}
{{- $u := regexFind "[a-z]+$" $v -}}
{{- if eq $u "ms" -}}{{ div (add $n 999) 1000 }}
{{- else if eq $u "s" -}}{{ $n }}
{{- else if eq $u "m" -}}{{ mul $n 60 }}
{{- else if eq $u "h" -}}{{ mul $n 3600 }}
{{- else -}}{{ mul $n 86400 }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchyard.terminationGracePeriodSeconds" -}}
{{- $grace := include "switchyard.shutdownGraceSeconds" . | atoi -}}
{{- $pause := int .Values.preStopSeconds -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $pause $grace 10 -}}
{{- else -}}
{{- $t := int .Values.terminationGracePeriodSeconds -}}
{{- if le $t (add $pause $grace) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than preStopSeconds (%d) + server.shutdown_grace (%d s), or sessions are killed before they drain" $t $pause $grace) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/* Checks that span values and the configuration; rendered by the ConfigMap. */}}
{{- define "switchyard.validate" -}}
{{- $cfg := include "switchyard.config" . -}}
{{- $k8s := regexMatch "(?m)^[ \\t]*\\[[ \\t]*cluster\\.[^\\]]+\\.kubernetes[ \\t]*\\]" $cfg -}}
{{- if and $k8s (not .Values.discovery.enabled) -}}
{{- fail "config has a [cluster.<id>.kubernetes] table: set discovery.enabled=true (it mounts the service-account token and grants EndpointSlice access)" -}}
{{- end -}}
{{- if and .Values.discovery.enabled (not $k8s) -}}
{{- fail "discovery.enabled=true but config has no [cluster.<id>.kubernetes] table: add one or turn discovery off" -}}
{{- end -}}
{{- if not (regexMatch (printf "(?m)^[ \\t]*bind[ \\t]*=[ \\t]*\"0\\.0\\.0\\.0:%d\"" (int .Values.admin.port)) $cfg) -}}
{{- fail (printf "config: [admin] must bind \"0.0.0.0:%d\" (admin.port) so that the kubelet's probes reach it; use {{ include \"switchyard.adminTable\" . }}" (int .Values.admin.port)) -}}
{{- end -}}
{{- if and .Values.tls.ticketKeySecret.name (not (regexMatch "(?m)^[ \\t]*ticket_key_file[ \\t]*=" $cfg)) -}}
{{- fail "tls.ticketKeySecret.name is set but config has no ticket_key_file: use {{ include \"switchyard.tlsCertificate\" . }} (it writes the [tls] table), or set ticket_key_file in your own [tls] table" -}}
{{- end -}}
{{- if and .Values.tls.existingSecret .Values.tls.certManager.enabled -}}
{{- fail "tls.existingSecret and tls.certManager.enabled are exclusive" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.dnsNames) -}}
{{- fail "tls.certManager.enabled needs tls.certManager.dnsNames" -}}
{{- end -}}
{{- $_ := include "switchyard.terminationGracePeriodSeconds" . -}}
{{- end -}}
