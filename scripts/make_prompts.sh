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
    [queue_next]="您是下一位，请稍候。"
    [queue_many]="您前面还有多位来电，请稍候。"
    [queue_options]="如需留言，请按1。"
    [voicemail]="请在提示音后留言，留言完毕请按井号键或挂机。"
)
# "您前面还有N位": the caller's position in the queue
for n in 1 2 3 4 5 6 7 8 9; do
    PROMPTS[queue_$n]="您前面还有${n}位，请稍候。"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in "${!PROMPTS[@]}"; do
    espeak-ng -v cmn -s 170 -p 45 -w "$tmp/$name.wav" "${PROMPTS[$name]}"
    # resample for the phone network, with 300 ms of silence after so prompts do not run together
    sox "$tmp/$name.wav" -r 8000 -c 1 -b 16 "$out/$name.wav" pad 0 0.3
    printf '%s\t%s\n' "$name" "${PROMPTS[$name]}"
done | sort > "$out/texts.tsv"
# Not speech: the tone before a voicemail, hold audio (a soft two-note chime every 2 s).
sox -n -r 8000 -c 1 -b 16 "$out/beep.wav" synth 0.4 sine 1000 vol 0.5 pad 0.1 0.2
sox -n -r 8000 -c 1 -b 16 "$out/hold.wav" synth 0.5 sine 660 synth 0.5 sine 660 fade q 0.05 0.5 0.2 \
    vol 0.25 : synth 0.5 sine 523 fade q 0.05 0.5 0.2 vol 0.25 pad 0 1
# Ringback while a phone rings: China's 回铃音 is 450 Hz, 1 s on and 4 s off (YD/T 1970).
sox -n -r 8000 -c 1 -b 16 "$out/ringback.wav" synth 1 sine 450 vol 0.3 pad 0 4
printf 'beep\t(1 kHz tone)\nhold\t(hold chime)\nringback\t(450 Hz ringback)\n' >> "$out/texts.tsv"
echo "wrote $(ls "$out"/*.wav | wc -l) prompts to $out"
