{{/*
One Deployment of the shared image. The three processes differ only in their argument, their
port and the health paths, so they share this template; each <component>-deployment.yaml
calls it with:
  root       the chart context ($)
  component  gateway | worker | bridge (the container argument and the component label)
  values     .Values.<component>
  portName   name of the container port the probes and Services use
  port       its number (from config: gatewayPort / workerHealthPort / bridgeHealthPort)
  liveness   path of the liveness and startup probes
  readiness  path of the readiness probe
  preStop    seconds to sleep in a preStop hook (0: no hook)
*/}}
{{- define "crm-digital-fte.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "crm-digital-fte.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- /* With an HPA the replica count belongs to it; rendering one would reset it on upgrade. */}}
  {{- if not ($v.autoscaling | default dict).enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "crm-digital-fte.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "crm-digital-fte.configChecksum" $root }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "crm-digital-fte.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "crm-digital-fte.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ .component }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
          envFrom:
            {{- include "crm-digital-fte.envFrom" (dict "root" $root "hook" false) | nindent 12 }}
          env:
            {{- include "crm-digital-fte.env" (dict "root" $root "extra" $v.extraEnv) | nindent 12 }}
          {{- if $v.startupProbe.enabled }}
          startupProbe:
            {{- include "crm-digital-fte.probe" (dict "probe" $v.startupProbe "path" .liveness "port" .portName) | nindent 12 }}
          {{- end }}
          {{- if $v.livenessProbe.enabled }}
          livenessProbe:
            {{- include "crm-digital-fte.probe" (dict "probe" $v.livenessProbe "path" .liveness "port" .portName) | nindent 12 }}
          {{- end }}
          {{- if $v.readinessProbe.enabled }}
          readinessProbe:
            {{- include "crm-digital-fte.probe" (dict "probe" $v.readinessProbe "path" .readiness "port" .portName) | nindent 12 }}
          {{- end }}
          {{- if gt (int .preStop) 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "{{ .preStop }}"]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "crm-digital-fte.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "crm-digital-fte.volumes" $root | nindent 8 }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A HorizontalPodAutoscaler for one component; same arguments as the Deployment. */}}
{{- define "crm-digital-fte.hpa" -}}
{{- $root := .root -}}
{{- $a := .values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "crm-digital-fte.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "crm-digital-fte.fullname" $root }}-{{ .component }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- if gt (int $a.targetCPUUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if gt (int $a.targetMemoryUtilizationPercentage) 0 }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A PodDisruptionBudget for one component; same arguments as the Deployment. */}}
{{- define "crm-digital-fte.pdb" -}}
{{- $root := .root -}}
{{- $p := .values.pdb -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "crm-digital-fte.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  {{- if and (not (kindIs "invalid" $p.minAvailable)) (ne (toString $p.minAvailable) "") }}
  minAvailable: {{ include "crm-digital-fte.envValue" $p.minAvailable }}
  {{- else if and (not (kindIs "invalid" $p.maxUnavailable)) (ne (toString $p.maxUnavailable) "") }}
  maxUnavailable: {{ include "crm-digital-fte.envValue" $p.maxUnavailable }}
  {{- else }}
  maxUnavailable: 1
  {{- end }}
  selector:
    matchLabels:
      {{- include "crm-digital-fte.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
{{- end }}
