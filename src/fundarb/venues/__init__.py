"""Exchange backends behind one interface (`base.Venue`)."""
