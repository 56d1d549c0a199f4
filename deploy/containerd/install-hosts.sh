#!/bin/sh
# Installs regcache's containerd registry host configs (certs.d/<registry>/
# hosts.toml beside this script) on a node, pointing them at regcache.
#
#   REGCACHE_MIRROR  regcache's URL as the node reaches it, e.g.
#                    http://10.96.0.50:5000. Default: the regcache Service's
#                    ClusterIP from the REGCACHE_SERVICE_HOST/_PORT variables
#                    Kubernetes gives pods in the Service's namespace.
#   TEMPLATES        the certs.d directory to install from (default: certs.d
#                    beside this script)
#   CERTS_D          containerd's config_path (default /etc/containerd/certs.d)
#
# containerd reads hosts.toml on every pull: no restart. Its config.toml must
# name the directory once (see README "Use as a cluster mirror"):
#   [plugins."io.containerd.grpc.v1.cri".registry]
#     config_path = "/etc/containerd/certs.d"
# Each file is written to a temporary name and renamed, so containerd never
# reads half a file. Files for other registries are left alone.
set -eu

templates=${TEMPLATES:-$(dirname "$0")/certs.d}
certs_d=${CERTS_D:-/etc/containerd/certs.d}
mirror=${REGCACHE_MIRROR:-}
if [ -z "$mirror" ]; then
	if [ -z "${REGCACHE_SERVICE_HOST:-}" ]; then
		echo "install-hosts: set REGCACHE_MIRROR (e.g. http://10.96.0.50:5000)" >&2
		exit 2
	fi
	mirror="http://${REGCACHE_SERVICE_HOST}:${REGCACHE_SERVICE_PORT:-5000}"
fi
case $mirror in
http://* | https://*) ;;
*)
	echo "install-hosts: REGCACHE_MIRROR=$mirror: want http://host:port or https://host:port" >&2
	exit 2
	;;
esac
mirror=${mirror%/}

found=0
for f in "$templates"/*/hosts.toml; do
	[ -f "$f" ] || continue
	found=1
	ns=$(basename "$(dirname "$f")")
	mkdir -p "$certs_d/$ns"
	sed "s#http://regcache.example:5000#$mirror#g" "$f" >"$certs_d/$ns/.hosts.toml.tmp"
	mv "$certs_d/$ns/.hosts.toml.tmp" "$certs_d/$ns/hosts.toml"
	echo "install-hosts: $certs_d/$ns/hosts.toml -> $mirror"
done
if [ "$found" = 0 ]; then
	echo "install-hosts: no */hosts.toml under $templates" >&2
	exit 1
fi
