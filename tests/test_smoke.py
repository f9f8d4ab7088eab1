def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_create_contact(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    response = client.post("/api/v1/contacts", json={"email": "a@example.com", "topics": ["news"]},
                           headers=auth)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["subscriptions"] == {"news": "subscribed"}
