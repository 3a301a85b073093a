"""Appointments, drug orders and vaccinations booked on the keypad."""
