# Shared by the window-driving scripts (screens.sh, compliance.sh): starts
# Xvfb, openbox and the app in a fresh HOME, and gives the steps their verbs.
# Source it after setting OUT and PROJECT_NAME (the demo project's folder name
# under ~/Lethe); it sets WID, WORK, PROJECT and a cleanup trap.
#
# The clicks of the scripts are window coordinates of the 1280 × 820 window
# with the bundled fonts; a changed layout moves them. Each step waits for the
# files it writes (job.json states, evaluation.json, the report), so a wrong
# click shows up as a timeout naming the step, with the screenshots so far.

unset LETHE_CACHE_DIR XDG_CACHE_HOME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${LETHE_BIN:-}
if [[ -z $BIN ]]; then
    BIN=$ROOT/target/release/lethe
    [[ -x $BIN ]] || BIN=$ROOT/target/debug/lethe
fi
[[ -x $BIN ]] || { echo "no lethe binary at $BIN: cargo build -p lethe first" >&2; exit 1; }
DISP=${LETHE_DISPLAY:-:97}
WORK=$(mktemp -d /tmp/lethe-screens-run.XXXXXX)
mkdir -p "$OUT" "$WORK/home" "$WORK/xdg"
chmod 700 "$WORK/xdg"
export HOME=$WORK/home XDG_RUNTIME_DIR=$WORK/xdg DISPLAY=$DISP
PROJECT=$HOME/Lethe/Demo
PIDS=()
cleanup() {
    # Stop only what this script started, newest first.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

Xvfb "$DISP" -screen 0 1400x900x24 >"$WORK/xvfb.log" 2>&1 &
PIDS+=($!)
sleep 2
openbox >"$WORK/openbox.log" 2>&1 &
PIDS+=($!)
sleep 1
"$BIN" >"$WORK/app.log" 2>&1 &
PIDS+=($!)

step() { echo "[screens] $*"; }
fail() {
    echo "[screens] FAILED: $*" >&2
    echo "[screens] app log: $WORK/app.log; screenshots so far: $OUT" >&2
    exit 1
}
WID=
for _ in $(seq 1 120); do
    WID=$(xdotool search --name '^Lethe$' 2>/dev/null | head -1 || true)
    [[ -n $WID ]] && break
    sleep 1
done
[[ -n $WID ]] || fail "the window did not open"
sleep 10

shot() { xwd -id "$WID" -silent | convert xwd:- "$OUT/$1.png"; step "saved $OUT/$1.png"; }
click() { xdotool mousemove --window "$WID" "$1" "$2" click 1; sleep "${3:-2}"; }
# The central view's scroll bar: the wheel there scrolls the page, never a plot.
# Views whose bar sits further left (the study form's, at 1256) pass its x.
bottom() { xdotool mousemove --window "$WID" "${1:-1266}" 400; for _ in $(seq 1 40); do xdotool click 5; done; sleep 2; }
top() { xdotool mousemove --window "$WID" "${1:-1266}" 400; for _ in $(seq 1 40); do xdotool click 4; done; sleep 2; }
# Types into the value box at (x, y) (a slider's number).
set_value() { click "$1" "$2" 1; xdotool key ctrl+a; xdotool type "$3"; xdotool key Return; sleep 1; }
# Waits until `cond` (a shell expression) holds.
wait_for() {
    local what=$1 secs=$2 cond=$3
    for _ in $(seq 1 "$secs"); do
        if eval "$cond"; then return 0; fi
        sleep 1
    done
    shot "timeout-$(echo "$what" | tr ' ' '-')"
    fail "timed out waiting for $what"
}
# Runs whose job.json says `state: succeeded`, by plugin id substring.
succeeded() { grep -l '"state": "succeeded"' "$PROJECT"/runs/*"$1"*/job.json 2>/dev/null | wc -l; }
# The plugin scan writes its cache once it has looked at every library; the
# method list is empty until then (a debug build on a busy machine takes ~40 s).
wait_for_plugins() {
    wait_for "the plugin scan" 300 '[[ -n $(find "$HOME" -name plugin-scan.json 2>/dev/null) ]]'
    sleep 3
}
# Writes the data subject's pictures into $1: four training digits of the leaky
# demo's forget set and one test digit the model never trained on, as PNG
# files (numpy and zlib only).
write_pictures() {
    "$ROOT/.venv/bin/python" - "$ROOT" "$1" <<'PY'
import sys, zlib, struct
import numpy as np
root, out = sys.argv[1], sys.argv[2]
d = np.load(f"{root}/resources/demo/mnist10k-2k.npz")
forget = [int(l) for l in open(f"{root}/resources/demo/forget-2k.txt") if l.strip() and not l.startswith("#")]
def png(path, img):
    h, w = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i in forget[:4]:
    png(f"{out}/photo-{i}.png", d["x"][i, 0])
t = int(d["test_idx"][0])
png(f"{out}/not-trained-on-{t}.png", d["x"][t, 0])
PY
}
# A new deletion request's forget set from the data subject's pictures
# (write_pictures): the folder typed into step 3's folder form, its preview
# (matched and unmatched pictures) scrolled into view.
preview_pictures() {
    PICS=$WORK/pictures
    mkdir -p "$PICS"
    write_pictures "$PICS"
    click 134 87 3
    top
    # Step 3's "Make a new forget set"; the folder mode is the first choice.
    click 372 582 2
    set_value 700 664 "$PICS"
    sleep 8
    xdotool mousemove --window "$WID" 1266 400
    for _ in $(seq 1 6); do xdotool click 5; done
    sleep 2
}
