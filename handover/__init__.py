"""Deadlines: 8 h callbacks, 72 h referral follow-ups, Rx reviews, night handover."""
