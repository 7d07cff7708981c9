"""outbound-gate: stops WhatsApp messages Meta would refuse, before they are sent."""

__version__ = "0.1.0"
