{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "relayer-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else <release>-<name> (just <release>
when it already contains the name). Truncated to a DNS label.
*/}}
{{- define "relayer-operator.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "relayer-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the release.
*/}}
{{- define "relayer-operator.labels" -}}
helm.sh/chart: {{ include "relayer-operator.chart" . }}
{{ include "relayer-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: foresight
{{- end }}

{{/*
Labels that select the operator's pods (never change them on upgrade: a Deployment's selector
is immutable).
*/}}
{{- define "relayer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relayer-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "relayer-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relayer-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the leader Lease.
*/}}
{{- define "relayer-operator.leaseName" -}}
{{- default (include "relayer-operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "relayer-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The RBAC rules of the reconciler: exactly the requests the operator makes on the watched
namespaces (src/controller.rs, src/controller/cutover.rs). tests/chart_rbac.rs runs a full
cutover under these rules and fails when the operator is refused anything or when a rule here
grants a verb the operator never used. Keep both in step with the code.
*/}}
{{- define "relayer-operator.rules" -}}
# The API: watched; read fresh during a cutover (get); commands' annotations removed (patch);
# a rollback writes a revision's bundle back into the spec (update).
- apiGroups: ["relayer.foresight.dev"]
  resources: ["relayerdeployments"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Status is written whole with server-side apply.
- apiGroups: ["relayer.foresight.dev"]
  resources: ["relayerdeployments/status"]
  verbs: ["patch"]
# NB: never a request of its own. Children carry controller owner references with
# blockOwnerDeletion, which clusters running the OwnerReferencesPermissionEnforcement admission
# plugin allow only to whoever may update the owner's finalizers.
- apiGroups: ["relayer.foresight.dev"]
  resources: ["relayerdeployments/finalizers"]
  verbs: ["update"]
# Children, server-side applied (an apply that creates needs create as well as patch) and
# watched into caches; the colours are scaled to zero with a merge patch. `get`: before a
# child absent from the cache (which holds only what carries the operator's labels) is
# written, its name is read, and an object the RelayerDeployment does not control is never
# written.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Children that are also deleted: the HPA and the Ingress when the spec drops them, revisions
# and their ConfigMaps beyond revisionHistoryLimit.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["controllerrevisions"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Read only: the pods under test (gate and drain targets) and the active Service's
# EndpointSlices (drain evidence).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Read only: the colours' ReplicaSets, so that a pod is a target only when its owner chain
# (ReplicaSet, then Deployment) leads to the RelayerDeployment, never by labels alone.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# Events on RelayerDeployments (a repeated event is patched into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
