#!/bin/sh
# execguard's node installer, run by the DaemonSet (deploy/kubernetes/execguard.yaml), in the
# spirit of kata-deploy: it installs on the node, restarts containerd, and labels the node only
# once the `execguard` handler is live; removing the DaemonSet undoes it.
#
#   node.sh install     binaries and config to the node, the containerd handler
#                       (`execguard setup containerd`), containerd restarted, the handler
#                       checked live, then the node labelled execguard.io/ready=true
#   node.sh stop        the supervisor pod's preStop: a full `uninstall` when the DaemonSet is
#                       being deleted, nothing on a rolling update (the new pod reinstalls)
#   node.sh uninstall   the label removed first (no new guarded pods), the handler taken out,
#                       containerd restarted, binaries and config removed
#
# Environment (the DaemonSet sets the first two; the rest have node defaults, and the tests
# replace them):
#   HOST                         the node's root as mounted in the pod (default /host)
#   NODE_NAME                    this node (downward API)
#   EXECGUARD_BIN_DIR            where the image has the binaries (default /usr/bin)
#   EXECGUARD_CONFIG_SOURCE      the config to install (default /config/config.toml, the
#                                ConfigMap)
#   EXECGUARD_RESTART_CONTAINERD restarts the node's containerd (default: systemctl in PID 1's
#                                namespaces, through nsenter; needs hostPID)
#   EXECGUARD_HANDLER_LIVE       succeeds once containerd serves the handler (default: in PID
#                                1's namespaces, the CRI plugin loaded and the handler in
#                                `containerd config dump`)
#   EXECGUARD_LIVE_SECONDS       how long to wait for the handler after the restart (default 60)
#   EXECGUARD_KUBE_PATCH         patches this node's labels with the JSON merge patch given as
#                                its argument (default: the API server, with the pod's token)
#   EXECGUARD_DS_DELETING        succeeds when the DaemonSet is being deleted (default: asks the
#                                API server)
set -eu

HOST=${HOST:-/host}
BIN=${EXECGUARD_BIN_DIR:-/usr/bin}
LABEL=execguard.io/ready
SA=/var/run/secrets/kubernetes.io/serviceaccount

host() { nsenter --target 1 --mount --uts --ipc --net --pid -- "$@"; }

restart_containerd() {
  if [ -n "${EXECGUARD_RESTART_CONTAINERD:-}" ]; then
    sh -c "$EXECGUARD_RESTART_CONTAINERD"
  else
    host systemctl restart containerd
  fi
}

handler_live() {
  if [ -n "${EXECGUARD_HANDLER_LIVE:-}" ]; then
    sh -c "$EXECGUARD_HANDLER_LIVE"
  else
    host ctr plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1.cri .* ok' &&
      host containerd config dump 2>/dev/null | grep -q 'runtimes.execguard'
  fi
}

api() { # METHOD PATH [JSON merge patch]
  curl -sS --fail --cacert "$SA/ca.crt" -H "Authorization: Bearer $(cat "$SA/token")" \
    -X "$1" ${3:+-H 'Content-Type: application/merge-patch+json' --data "$3"} \
    "https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}$2"
}

patch_node() {
  if [ -n "${EXECGUARD_KUBE_PATCH:-}" ]; then
    sh -c "$EXECGUARD_KUBE_PATCH \"\$1\"" patch "$1"
  else
    api PATCH "/api/v1/nodes/${NODE_NAME:?NODE_NAME is not set}" "$1" >/dev/null
  fi
}

ds_deleting() {
  if [ -n "${EXECGUARD_DS_DELETING:-}" ]; then
    sh -c "$EXECGUARD_DS_DELETING"
    return
  fi
  ns=$(cat "$SA/namespace")
  # Gone (404: deleted in the background) or marked for deletion (foreground).
  if ! ds=$(api GET "/apis/apps/v1/namespaces/$ns/daemonsets/execguard" 2>/dev/null); then
    return 0
  fi
  printf '%s' "$ds" | grep -q '"deletionTimestamp"'
}

install_node() {
  install -d "$HOST/usr/local/bin" "$HOST/etc/execguard"
  install -m 755 "$BIN/execguard" "$BIN/execguard-runtime" "$HOST/usr/local/bin/"
  install -m 644 "${EXECGUARD_CONFIG_SOURCE:-/config/config.toml}" "$HOST/etc/execguard/config.toml"
  "$BIN/execguard" setup containerd --root "$HOST" \
    --runtime-path /usr/local/bin/execguard-runtime --execguard-path /usr/local/bin/execguard
  echo "execguard: restarting containerd on the node (running containers keep running)"
  restart_containerd
  tries=0
  until handler_live; do
    tries=$((tries + 1))
    if [ "$tries" -ge "${EXECGUARD_LIVE_SECONDS:-60}" ]; then
      echo "execguard: containerd does not serve the execguard handler after a restart; node not labelled" >&2
      exit 1
    fi
    sleep 1
  done
  patch_node "{\"metadata\":{\"labels\":{\"$LABEL\":\"true\"}}}"
  echo "execguard: handler live, node labelled $LABEL=true"
}

uninstall_node() {
  patch_node "{\"metadata\":{\"labels\":{\"$LABEL\":null}}}" || true
  "$BIN/execguard" setup containerd --remove --root "$HOST"
  restart_containerd
  rm -f "$HOST/usr/local/bin/execguard" "$HOST/usr/local/bin/execguard-runtime" \
    "$HOST/etc/execguard/config.toml"
  # The directory itself may be a mount point in this pod.
  rmdir "$HOST/etc/execguard" 2>/dev/null || true
  echo "execguard: removed from the node"
}

case "${1:-}" in
  install) install_node ;;
  uninstall) uninstall_node ;;
  stop) if ds_deleting; then uninstall_node; else echo "execguard: rolling update; the install stays"; fi ;;
  *) echo "usage: $0 install|stop|uninstall" >&2; exit 2 ;;
esac
