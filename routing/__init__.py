"""Who answers now: directory, calendar, roster, presence, route plan and its reasons.

A domain slice: it imports store/ but never telephony/ or web/.
"""
