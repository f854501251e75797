{{/* Names and labels. */}}
{{- define "facellm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "facellm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "facellm.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "facellm.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "facellm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facellm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "facellm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "facellm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
facellm.io/preset: {{ .Values.model.preset | quote }}
{{- end }}

{{/* The selected preset (the schema restricts model.preset to known names). */}}
{{- define "facellm.preset" -}}
{{- $preset := index .Values.presets .Values.model.preset -}}
{{- if not $preset }}{{ fail (printf "model.preset %q has no entry under presets" .Values.model.preset) }}{{ end -}}
{{- toJson $preset -}}
{{- end }}

{{/*
Effective tensor-parallel size: model.tensorParallelSize, else the preset's. The schema checks an
explicit value against model.gpusPerNode; this repeats the check for the preset default.
*/}}
{{- define "facellm.tensorParallelSize" -}}
{{- $preset := include "facellm.preset" . | fromJson -}}
{{- $tp := int (default $preset.tensorParallelSize .Values.model.tensorParallelSize) -}}
{{- if gt $tp (int .Values.model.gpusPerNode) -}}
{{- fail (printf "tensor-parallel size %d (preset %s) needs %d GPUs on one node, but model.gpusPerNode is %d: set model.gpusPerNode to your GPU node type's count" $tp .Values.model.preset $tp (int .Values.model.gpusPerNode)) -}}
{{- end -}}
{{- $tp -}}
{{- end }}

{{- define "facellm.usesGpu" -}}
{{- $preset := include "facellm.preset" . | fromJson -}}
{{- if $preset.gpu }}true{{ end -}}
{{- end }}

{{- define "facellm.modelId" -}}
{{- $preset := include "facellm.preset" . | fromJson -}}
{{- default $preset.model .Values.model.id -}}
{{- end }}

{{/* repository@digest when a digest is given (immutable), else repository:tag. */}}
{{- define "facellm.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- $tag := .Values.image.tag -}}
{{- if not $tag -}}
{{- $tag = ternary (printf "%s-cpu" .Chart.AppVersion) .Chart.AppVersion (not (include "facellm.usesGpu" .)) -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Grace period: must outlast the preStop sleep plus the server's drain. */}}
{{- define "facellm.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int .Values.server.drainTimeoutSeconds) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $needed 15 -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + server.drainTimeoutSeconds (%d), or in-flight requests are killed" (int .Values.terminationGracePeriodSeconds) $needed) -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end }}

{{- define "facellm.startupFailureThreshold" -}}
{{- $preset := include "facellm.preset" . | fromJson -}}
{{- $budget := int (default $preset.startupSeconds .Values.probes.startupSeconds) -}}
{{- $period := int .Values.probes.startupPeriodSeconds -}}
{{- div (add $budget $period -1) $period -}}
{{- end }}

{{- define "facellm.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "facellm.fullname" .)) .Values.auth.existingSecret -}}
{{- end }}

{{- define "facellm.modelCacheClaim" -}}
{{- default (printf "%s-model-cache" (include "facellm.fullname" .)) .Values.modelCache.persistence.existingClaim -}}
{{- end }}

{{/* JSON schema cannot compare two fields: maxReplicas >= minReplicas is checked here. */}}
{{- define "facellm.checkAutoscaling" -}}
{{- $a := .Values.autoscaling -}}
{{- if lt (int $a.maxReplicas) (int $a.minReplicas) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) is below autoscaling.minReplicas (%d)" (int $a.maxReplicas) (int $a.minReplicas)) -}}
{{- end -}}
{{- end }}

{{- define "facellm.adminKeySecret" -}}
{{- default (printf "%s-admin-key" (include "facellm.fullname" .)) .Values.server.runtimeLora.existingSecret -}}
{{- end }}

{{/*
An adapter given as a path under /models lives in the model cache volume. Without persistence that
volume is an emptyDir, empty at every start: the server would fail to load the adapter, so say so
at install time instead of in a crash loop.
*/}}
{{- define "facellm.checkLoraAdapters" -}}
{{- range $name, $source := .Values.server.loraAdapters -}}
{{- if and (hasPrefix "/models/" $source) (not $.Values.modelCache.persistence.enabled) -}}
{{- fail (printf "server.loraAdapters.%s: %s is in the model cache volume, an empty emptyDir unless modelCache.persistence.enabled=true (put the adapter on the claim first)" $name $source) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
PromQL label matchers (no braces) for this release's /metrics series in the alert rules: the
ServiceMonitor's namespace and service labels unless prometheusRule.selector says otherwise.
*/}}
{{- define "facellm.metricsSelector" -}}
{{- default (printf "namespace=%q, service=%q" .Release.Namespace (include "facellm.fullname" .)) .Values.prometheusRule.selector -}}
{{- end }}

{{/*
API processes (FACELLM_API_PROCESSES): server.apiProcesses, else derived from the pod's CPU
request: one core each for the engine core's loop and each GPU worker, the rest for the HTTP
front, one process a core (at least 1, at most 8). "4", "4.5" and "4500m" read as 4 cores.
*/}}
{{- define "facellm.apiProcesses" -}}
{{- if .Values.server.apiProcesses -}}
{{- .Values.server.apiProcesses -}}
{{- else -}}
{{- $preset := include "facellm.preset" . | fromJson -}}
{{- $resources := mergeOverwrite (deepCopy $preset.resources) (deepCopy .Values.resources) -}}
{{- $cpu := toString (dig "requests" "cpu" "1" $resources) -}}
{{- $cores := ternary (div (int (trimSuffix "m" $cpu)) 1000) (int (float64 $cpu)) (hasSuffix "m" $cpu) -}}
{{- $tp := int (include "facellm.tensorParallelSize" .) -}}
{{- max 1 (min 8 (sub (sub $cores 1) $tp)) -}}
{{- end -}}
{{- end }}

{{- define "facellm.batchClaim" -}}
{{- default (printf "%s-batch" (include "facellm.fullname" .)) .Values.batch.persistence.existingClaim -}}
{{- end }}

{{/*
The Batch API on SQLite keeps its jobs on one claim: one replica (or a dedicated batch release).
Several replicas share batches only through PostgreSQL (batch.database.existingSecret).
*/}}
{{- define "facellm.batchOnSqlite" -}}
{{- if and .Values.batch.enabled (not .Values.batch.database.existingSecret) -}}
{{- if or (gt (int .Values.replicaCount) 1) (ne .Values.autoscaling.mode "none") -}}
{{- fail "batch.enabled on SQLite (no batch.database.existingSecret) needs one replica: set replicaCount=1 and autoscaling.mode=none, or give a PostgreSQL URL in batch.database.existingSecret" -}}
{{- end -}}
true
{{- end -}}
{{- end }}

{{/*
Combinations the server refuses at startup, refused here instead of as a crash-looping pod:
runtime LoRA with more than one API process (each would hold its own adapters), engine
arguments that run code or carry a secret (hf_token never: it would sit in a ConfigMap), and a
max_logprobs below the 10 confidences ask for (CONFIDENCE_LOGPROBS in server/answers.py).
*/}}
{{- define "facellm.checkServerSettings" -}}
{{- $s := .Values.server -}}
{{- $processes := include "facellm.apiProcesses" . | int -}}
{{- if and $s.runtimeLora.enabled (gt $processes 1) -}}
{{- fail (printf "server.runtimeLora.enabled needs one API process, and server.apiProcesses is %d (derived from the CPU request unless set): set server.apiProcesses=1" $processes) -}}
{{- end -}}
{{- $allowUnsafe := eq (toString (index $s.extraSettings "FACELLM_ALLOW_UNSAFE_ENGINE_ARGS" | default "false")) "true" -}}
{{- $unsafe := list "trust_remote_code" "code_revision" "worker_cls" "worker_extension_cls" "scheduler_cls" "logits_processors" "distributed_executor_backend" "model_class_overrides" "io_processor_plugin" "reasoning_parser_plugin" "allowed_local_media_path" -}}
{{- range $name, $value := $s.engineArgs -}}
{{- $key := replace "-" "_" $name -}}
{{- if eq $key "hf_token" -}}
{{- fail (printf "server.engineArgs.%s: a secret would be stored in a ConfigMap; give HF_TOKEN from a Secret through extraEnv" $name) -}}
{{- end -}}
{{- if and (has $key $unsafe) (not $allowUnsafe) -}}
{{- fail (printf "server.engineArgs.%s runs code named in the config; refused unless server.extraSettings.FACELLM_ALLOW_UNSAFE_ENGINE_ARGS=true" $name) -}}
{{- end -}}
{{- if and (eq $key "max_logprobs") (ge (int $value) 0) (lt (int $value) 10) -}}
{{- fail (printf "server.engineArgs.%s is %v; confidences ask for 10 logprobs (one per option): give at least 10" $name $value) -}}
{{- end -}}
{{- end -}}
{{- end }}
