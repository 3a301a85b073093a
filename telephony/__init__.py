"""The SIP edge: registration, call legs, dialing, bridging. Knows nothing of residents or doctors."""

# pyVoIP 1.6.8 has an import cycle: pyVoIP.SIP imports pyVoIP.VoIP, which needs SIP.SIPMessage
# at class-definition time. Imported SIP-first (as telephony.sip_ua alone would), it fails;
# VoIP-first it works. Every telephony module comes through here first.
import pyVoIP.VoIP  # noqa: F401
