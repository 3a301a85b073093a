#!/usr/bin/env bash
# Generate the default Mandarin prompts into ivr/prompts/ as 8 kHz mono 16-bit WAV.
# The district records its own prompts later (console); these keep the hotline speaking until
# then. Unhurried speech for elderly callers (espeak-ng at 170 gives ≈2.5 syllables/s in Mandarin, slower than everyday speech). Needs espeak-ng and sox (Debian); the
# generated files are committed, so running the service or the tests needs neither.
set -euo pipefail
cd "$(dirname "$0")/.."
out=ivr/prompts
mkdir -p "$out"

declare -A PROMPTS=(
    [greeting]="您好，这里是家庭医生签约服务热线。"
    [menu]="转接您的家庭医生，请按1。"
    [busy]="签约服务热线提示您坐席忙，请稍后。"
    [callback]="您的家庭医生将在8小时内给您回电。感谢您的来电，再见。"
    [invalid]="您的输入有误，请重新输入。"
    [desk]="正在为您转接服务台，请稍候。"
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in "${!PROMPTS[@]}"; do
    espeak-ng -v cmn -s 170 -p 45 -w "$tmp/$name.wav" "${PROMPTS[$name]}"
    # resample for the phone network, with 300 ms of silence after so prompts do not run together
    sox "$tmp/$name.wav" -r 8000 -c 1 -b 16 "$out/$name.wav" pad 0 0.3
    printf '%s\t%s\n' "$name" "${PROMPTS[$name]}"
done | sort > "$out/texts.tsv"
echo "wrote $(ls "$out"/*.wav | wc -l) prompts to $out"
