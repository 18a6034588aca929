{{/*
A hook Job running one crm-fte sub-command with the same image, settings and hardening as the
Deployments. Call with (dict "root" $ "name" "migrate" "args" (list "migrate") "weight" "0"
"job" .Values.hooks.migrate).
*/}}
{{- define "crm-digital-fte.hookJob" -}}
{{- $root := .root -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "crm-digital-fte.fullname" $root }}-{{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .name) | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ .weight | quote }}
    {{- /* Kept on failure for `kubectl logs`; replaced on the next attempt. */}}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ .job.backoffLimit }}
  activeDeadlineSeconds: {{ .job.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "crm-digital-fte.componentLabels" (dict "root" $root "component" .name) | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "crm-digital-fte.hookServiceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .name }}
          image: {{ include "crm-digital-fte.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          envFrom:
            {{- include "crm-digital-fte.envFrom" (dict "root" $root "hook" true) | nindent 12 }}
          env:
            {{- include "crm-digital-fte.env" (dict "root" $root "extra" list) | nindent 12 }}
          resources:
            {{- toYaml $root.Values.hooks.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "crm-digital-fte.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "crm-digital-fte.volumes" $root | nindent 8 }}
      {{- with $root.Values.hooks.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.hooks.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.hooks.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
