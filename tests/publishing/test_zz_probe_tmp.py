import time, json
def test_probe(live):
    print("URL", live.url)
    print(live.stored_points("landsd_reference"))
    open("/tmp/live_url","w").write(live.url)
    time.sleep(int(open("/tmp/probe_secs").read()))
