"""SIP edge: lines, call legs, dialing, bridge, codecs, DTMF, prompts (issue 3)."""
