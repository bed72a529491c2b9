"""SecureTranscribe's Airflow components: the inbox trigger and sensor, UI views."""
