#!/usr/bin/env bash
# Serving certificate for the scorer's admission webhook, without cert-manager.
#
# Run it after `kubectl apply -k deploy/` (it needs the namespace and the webhook to exist):
#   scripts/setup_webhook_tls.sh
# It makes a one-off CA and a serving certificate for the scorer Service (SANs: ksense-scorer,
# ksense-scorer.ksense, ksense-scorer.ksense.svc, ksense-scorer.ksense.svc.cluster.local),
# stores certificate + key + CA in the Secret ksense/ksense-scorer-tls (type kubernetes.io/tls,
# the layout cert-manager writes too), and patches the CA into the webhook's caBundle.
#
# Keys: the serving key exists only in the cluster Secret (and, while the script runs, in a
# private temporary directory it removes on exit). The CA key is deleted right after it signed
# the one certificate: nothing can mint another certificate this webhook trusts. No key or
# certificate is ever written to the repository.
#
# Re-runnable: when the Secret already holds a certificate with the right SANs, signed by its
# ca.crt and valid for more than --renew-days, it is kept and only the caBundle is (re)checked.
# --renew issues a new pair; the caBundle then trusts the new and the old CA until the next run,
# so the scorer (which re-reads the rotated files within about a minute) is never distrusted.
#
# --dry-run --out DIR: no cluster access at all. The CA, certificate and key are made in DIR
# (and reused from DIR on the next run, as the Secret would be), and the exact kubectl commands
# and the caBundle patch are printed and written to DIR/commands.sh and DIR/cabundle-patch.json.
set -euo pipefail
umask 077

NAMESPACE=ksense
SERVICE=ksense-scorer
SECRET=ksense-scorer-tls
WEBHOOK=ksense-scorer
WEBHOOK_ENTRY=pods.fuzzy.ksense.io   # the entry name in deploy/base (dry-run; a cluster is asked)
CLUSTER_DOMAIN=cluster.local
DAYS=365
RENEW_DAYS=30
RENEW=0
DRY_RUN=0
OUT=""
KUBECTL=${KUBECTL:-kubectl}
FIELD_MANAGER=ksense-setup-webhook-tls

usage() {
    cat <<EOF
usage: $0 [--dry-run --out DIR] [--renew] [options]
  --namespace NS        namespace of the scorer (default $NAMESPACE)
  --service NAME        scorer Service (default $SERVICE)
  --secret NAME         TLS Secret the scorer mounts (default $SECRET)
  --webhook NAME        ValidatingWebhookConfiguration (default $WEBHOOK)
  --cluster-domain D    cluster DNS domain (default $CLUSTER_DOMAIN)
  --days N              validity of the CA and the certificate (default $DAYS)
  --renew-days N        issue a new pair when fewer days are left (default $RENEW_DAYS)
  --renew               issue a new pair now
  --dry-run             touch no cluster; needs --out DIR
  --out DIR             where --dry-run keeps the files it makes
  --kubectl PATH        kubectl to use (default \$KUBECTL or kubectl)
EOF
}

die() { echo "setup_webhook_tls: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --namespace) NAMESPACE=$2; shift 2 ;;
        --service) SERVICE=$2; shift 2 ;;
        --secret) SECRET=$2; shift 2 ;;
        --webhook) WEBHOOK=$2; shift 2 ;;
        --cluster-domain) CLUSTER_DOMAIN=$2; shift 2 ;;
        --days) DAYS=$2; shift 2 ;;
        --renew-days) RENEW_DAYS=$2; shift 2 ;;
        --renew) RENEW=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --kubectl) KUBECTL=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

command -v openssl >/dev/null || die "openssl not found"
case "$DAYS$RENEW_DAYS" in *[!0-9]*) die "--days and --renew-days take whole numbers" ;; esac
[ "$RENEW_DAYS" -lt "$DAYS" ] || die "--renew-days ($RENEW_DAYS) must be below --days ($DAYS)"

SANS=("$SERVICE" "$SERVICE.$NAMESPACE" "$SERVICE.$NAMESPACE.svc" "$SERVICE.$NAMESPACE.svc.$CLUSTER_DOMAIN")

b64() { base64 | tr -d '\n'; }
b64d() { base64 -d 2>/dev/null || base64 -D; }

if [ "$DRY_RUN" = 1 ]; then
    [ -n "$OUT" ] || die "--dry-run needs --out DIR"
    mkdir -p "$OUT"
    WORK=$(cd "$OUT" && pwd)
    K="kubectl"
else
    [ -z "$OUT" ] || die "--out is for --dry-run only (keys stay in the cluster Secret)"
    command -v "$KUBECTL" >/dev/null || die "kubectl not found (set --kubectl or \$KUBECTL)"
    K="$KUBECTL"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ksense-tls.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    "$K" get namespace "$NAMESPACE" -o name >/dev/null 2>&1 \
        || die "namespace $NAMESPACE not found: run \`kubectl apply -k deploy/\` first"
    "$K" get validatingwebhookconfiguration "$WEBHOOK" -o name >/dev/null 2>&1 \
        || die "ValidatingWebhookConfiguration $WEBHOOK not found: run \`kubectl apply -k deploy/\` first"
    injector=$("$K" get validatingwebhookconfiguration "$WEBHOOK" \
        -o jsonpath='{.metadata.annotations.cert-manager\.io/inject-ca-from}')
    [ -z "$injector" ] || die "webhook $WEBHOOK gets its caBundle from cert-manager ($injector): \
nothing to do (the cert-manager overlay manages the Secret)"
    WEBHOOK_ENTRY=$("$K" get validatingwebhookconfiguration "$WEBHOOK" -o jsonpath='{.webhooks[*].name}')
    [ -n "$WEBHOOK_ENTRY" ] || die "webhook $WEBHOOK has no entries"
    # The current state: certificate and CA of the Secret (never its key).
    if [ -n "$("$K" -n "$NAMESPACE" get secret "$SECRET" --ignore-not-found -o name)" ]; then
        "$K" -n "$NAMESPACE" get secret "$SECRET" -o jsonpath='{.data.tls\.crt}' | b64d > "$WORK/tls.crt"
        "$K" -n "$NAMESPACE" get secret "$SECRET" -o jsonpath='{.data.ca\.crt}' | b64d > "$WORK/ca.crt"
    fi
fi

# --- keep or issue ------------------------------------------------------------------------------
current_ok() {
    [ -s "$WORK/tls.crt" ] && [ -s "$WORK/ca.crt" ] || return 1
    [ "$DRY_RUN" = 0 ] || [ -s "$WORK/tls.key" ] || return 1
    openssl verify -CAfile "$WORK/ca.crt" "$WORK/tls.crt" >/dev/null 2>&1 || return 1
    openssl x509 -in "$WORK/tls.crt" -noout -checkend $((RENEW_DAYS * 86400)) >/dev/null 2>&1 || return 1
    local sans
    sans=$(openssl x509 -in "$WORK/tls.crt" -noout -ext subjectAltName 2>/dev/null) || return 1
    for name in "${SANS[@]}"; do
        grep -Eq "DNS:$(printf '%s' "$name" | sed 's/\./\\./g')(,|$)" <<<"$sans" || return 1
    done
}

ISSUED=0
if [ "$RENEW" = 0 ] && current_ok; then
    echo "setup_webhook_tls: keeping the current certificate (valid, SANs complete, more than $RENEW_DAYS days left)"
    cp "$WORK/ca.crt" "$WORK/bundle.crt"
else
    OLD_CA=""
    if [ -s "$WORK/ca.crt" ] && openssl x509 -in "$WORK/ca.crt" -noout -checkend 0 >/dev/null 2>&1; then
        OLD_CA=$(cat "$WORK/ca.crt")
    fi
    san_ext=$(printf 'DNS:%s,' "${SANS[@]}")
    cat > "$WORK/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = ${san_ext%,}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
        -keyout "$WORK/ca.key" -out "$WORK/ca.crt" -days "$DAYS" \
        -subj "/CN=ksense-webhook-ca-$(date -u +%Y%m%dT%H%M%SZ)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
        -keyout "$WORK/tls.key" -out "$WORK/tls.csr" -subj "/CN=$SERVICE.$NAMESPACE.svc" 2>/dev/null
    openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 \
        -extfile "$WORK/server.ext" -out "$WORK/tls.crt" 2>/dev/null
    # The CA signed its one certificate: its key goes now.
    rm -f "$WORK/ca.key" "$WORK/tls.csr" "$WORK/server.ext"
    chmod 600 "$WORK/tls.key"
    { cat "$WORK/ca.crt"; [ -z "$OLD_CA" ] || printf '%s\n' "$OLD_CA"; } > "$WORK/bundle.crt"
    ISSUED=1
    echo "setup_webhook_tls: issued a certificate for ${SANS[*]} (valid $DAYS days)"
fi

CA_BUNDLE=$(b64 < "$WORK/bundle.crt")
PATCH='{"webhooks":['
sep=""
for entry in $WEBHOOK_ENTRY; do
    PATCH+="$sep{\"name\":\"$entry\",\"clientConfig\":{\"caBundle\":\"$CA_BUNDLE\"}}"
    sep=","
done
PATCH+=']}'

# Server-side apply: no last-applied annotation, which would hold a second copy of the key.
APPLY_SECRET="$K apply --server-side --force-conflicts --field-manager=$FIELD_MANAGER -f -"
PATCH_WEBHOOK="$K patch validatingwebhookconfiguration $WEBHOOK --type=strategic -p"

if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$PATCH" > "$WORK/cabundle-patch.json"
    {
        echo "# What setup_webhook_tls.sh would run against the cluster (dry run, files in $WORK)."
        if [ "$ISSUED" = 1 ]; then
            echo "# 1. the Secret (certificate, key, CA) — server-side apply:"
            echo "$K -n $NAMESPACE create secret generic $SECRET --type=kubernetes.io/tls \\"
            echo "    --from-file=tls.crt=$WORK/tls.crt --from-file=tls.key=$WORK/tls.key \\"
            echo "    --from-file=ca.crt=$WORK/ca.crt --dry-run=client -o json \\"
            echo "  | $APPLY_SECRET"
        else
            echo "# 1. the Secret is kept as it is"
        fi
        echo "# 2. the webhook's caBundle:"
        echo "$PATCH_WEBHOOK \"\$(cat $WORK/cabundle-patch.json)\""
    } > "$WORK/commands.sh"
    cat "$WORK/commands.sh"
    exit 0
fi

if [ "$ISSUED" = 1 ]; then
    "$K" -n "$NAMESPACE" create secret generic "$SECRET" --type=kubernetes.io/tls \
        --from-file=tls.crt="$WORK/tls.crt" --from-file=tls.key="$WORK/tls.key" \
        --from-file=ca.crt="$WORK/ca.crt" --dry-run=client -o json \
        | $APPLY_SECRET >/dev/null
    echo "setup_webhook_tls: wrote Secret $NAMESPACE/$SECRET"
fi
current=$("$K" get validatingwebhookconfiguration "$WEBHOOK" -o jsonpath='{.webhooks[*].clientConfig.caBundle}')
want=""
for _ in $WEBHOOK_ENTRY; do want+="${want:+ }$CA_BUNDLE"; done
if [ "$current" = "$want" ]; then
    echo "setup_webhook_tls: caBundle of $WEBHOOK is up to date"
else
    $PATCH_WEBHOOK "$PATCH" >/dev/null
    echo "setup_webhook_tls: patched caBundle of $WEBHOOK"
fi
if [ "$ISSUED" = 1 ]; then
    echo "setup_webhook_tls: the scorer pods start (or pick up the new files within about a minute)."
fi
echo "verify: kubectl -n $NAMESPACE rollout status deployment/$SERVICE"
