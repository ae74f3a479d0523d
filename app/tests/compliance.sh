#!/usr/bin/env bash
# The compliance officer's story on the leaky demo, driven by mouse under Xvfb
# (issue #24): from the first start to a hashed report and its verdict banner,
# three times:
#   1. exact retraining of the demo's 100 digits: Evaluate, Attack, Report: PASS;
#   2. a one-epoch fine-tune of the same request: the default attack (metric
#      MIA) cannot tell the original model from the retrained one, so the
#      verdict is INCONCLUSIVE and names a stronger attack;
#   3. the data subject's own pictures (four of their training digits and one
#      picture the model never saw, shown unmatched with its reason): retraining
#      on four samples is INCONCLUSIVE with the number of samples needed.
# Saves a screenshot of each screen and the reports' first pages as PNG in OUT
# (default /tmp/lethe-compliance). Nothing is committed; the project goes to a
# fresh HOME under /tmp.
#
#   app/tests/compliance.sh [OUT]
#
# Needs what screens.sh needs (see app/tests/xdriver.sh).
set -euo pipefail

OUT=${1:-/tmp/lethe-compliance}
# shellcheck source=app/tests/xdriver.sh
source "$(dirname "$0")/xdriver.sh"
# The newest run folder of a plugin (folders start with their time).
latest() { find "$PROJECT/runs" -maxdepth 1 -name "*-$1" | sort | tail -1; }
# The banner's outcome, as the last report of run folder $1 wrote it.
verdict_of() { pdftotext "$(ls "$1"/exports/report-*.pdf | tail -1)" - | grep -m1 -oE 'PASS|FAIL|INCONCLUSIVE'; }
pdf_pages() { pdftoppm -png -r 60 -f 1 -l "$3" "$(ls "$1"/exports/report-*.pdf | tail -1)" "$OUT/$2"; }
# Evaluate and attack the run shown (its "Next" strip, above the verdict, at height $1),
# waiting for each; $2 is its folder, $3 the attack runs expected by then.
next_steps() {
    local y=$1 run=$2 attacks=$3 before
    before=$(find "$PROJECT/runs" -maxdepth 1 -name "*metric-mia*" | wc -l)
    click 400 "$y" 3
    # A click that lands while the window is busy (a debug build on a loaded
    # machine) can be lost: click again until the attack runs exist.
    for _ in 1 2 3; do
        click 580 "$y" 6
        (($(find "$PROJECT/runs" -maxdepth 1 -name "*metric-mia*" | wc -l) > before)) && break
    done
    wait_for "the attacks on $(basename "$run")" 900 '[[ $(succeeded metric-mia) -ge $attacks ]]'
    wait_for "the evaluation of $(basename "$run")" 900 'ls "$run"/evaluation-*/evaluation.json >/dev/null 2>&1'
}

step "first start: the demo offer"
shot 01-welcome
click 145 228 5
wait_for_plugins
top
shot 02-request-leaky-demo

step "1. exact retraining (the method the demo offers first)"
bottom
shot 03-retrain-form-recorded-recipe
click 390 745 8
wait_for "the retraining" 900 '[[ $(succeeded retrain) -ge 1 ]]'
sleep 3
top
shot 04-retrain-finished
next_steps 143 "$(latest retrain)" 2
# The attack runs open their own view; back to the deletion run (the oldest run).
click 100 500 8
top
shot 05-retrain-evidence
click 750 143 3
RETRAIN=$(latest retrain)
wait_for "the retrain report" 300 'ls "$RETRAIN"/exports/report-*.pdf >/dev/null 2>&1'
sleep 4
shot 06-retrain-pass
[[ $(verdict_of "$RETRAIN") == PASS ]] || fail "retraining's verdict is $(verdict_of "$RETRAIN"), not PASS"
pdf_pages "$RETRAIN" 07-retrain-report 4

step "2. a one-epoch fine-tune of the same request"
click 134 87 3
top
click 500 667 3
click 345 483 3
bottom
shot 08-finetune-form
set_value 676 309 1
click 390 745 8
wait_for "the fine-tuning" 900 '[[ $(succeeded finetune) -ge 1 ]]'
sleep 3
top
# The original model was attacked for step 1: only the new model is attacked.
next_steps 143 "$(latest finetune)" 3
# Runs, newest first: its attack, the fine-tune, then step 1's three.
click 100 477 10
top
shot 09-finetune-inconclusive-weak-attack

step "3. the data subject's own pictures: four of their digits and one the model never saw"
preview_pictures
shot 10-pictures-matched-and-unmatched
# "I understand: forget the 4 matched picture(s)…", then "Save this forget set".
click 316 340 1
click 685 482 3
shot 11-pictures-too-few-warning
# Back to exact retraining: the method list opens under its box (at the
# fine-tune form's bottom view) and Retrain is two wheel clicks down.
bottom
click 500 185 3
xdotool mousemove --window "$WID" 500 300
for _ in $(seq 1 2); do xdotool click 5; done
sleep 1
click 348 259 3
bottom
click 390 745 8
wait_for "the retraining of four samples" 900 '[[ $(succeeded retrain) -ge 2 ]]'
sleep 3
top
next_steps 143 "$(latest retrain)" 5
# Runs, newest first (one row lower: the new forget set is listed above
# them): its two attacks, then this retraining.
click 100 523 10
top
shot 12-pictures-inconclusive-too-few

step "done: $OUT"
