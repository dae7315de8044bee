#!/usr/bin/env python3
"""A customer user invited, activated, listed, disabled, enabled and deleted with the official ThingsBoard
Python REST client (tb-rest-client==4.4), the way an administrator's onboarding script does it without a
mail server.

Environment:
  BASE_URL        e.g. http://127.0.0.1:8080
  USERNAME        tenant administrator login
  PASSWORD

Flow: login -> save_customer -> save_user (CUSTOMER_USER, send_activation_mail=False) -> get_activation_link
-> activate_user (a token pair) -> the user logs in -> get_user_users / get_users as the user (its customer's
users only) and as the administrator (everyone) -> get_customer_users -> get_user_by_id -> the user cannot
create users (403) -> set_user_credentials_enabled(False) -> its login is refused (401) and its token too ->
set_user_credentials_enabled(True) -> it logs in again -> delete_user -> its token is refused (401).
Prints "OK" and exits 0 on success; on failure prints "FAIL: <reason>" to stderr and exits non-zero.
"""

import uuid

from flow_checks import check, env, main

PASSWORD = "py-invited-1"


def emails(page):
    return sorted(u.email for u in page.data)


def run_flow():
    import requests
    from tb_rest_client.rest_client import RestClient
    from tb_rest_client.models import ActivateUserRequest, Customer, CustomerId, User
    from tb_rest_client.rest import ApiException

    def status_of(call):
        try:
            call()
        except ApiException as e:
            return e.status
        return 200

    def login_status(email, password):
        return requests.post(env("BASE_URL") + "/api/auth/login", json={"username": email, "password": password},
                             timeout=30).status_code

    suffix = uuid.uuid4().hex[:8]
    email = "py-user-%s@example.org" % suffix
    with RestClient(env("BASE_URL")) as admin:
        admin.login(username=env("USERNAME"), password=env("PASSWORD"))
        customer = admin.save_customer(Customer(title="Py Users " + suffix))

        user = admin.save_user(User(email=email, authority="CUSTOMER_USER", first_name="Py", last_name="User",
                                    customer_id=CustomerId(customer.id.id, "CUSTOMER")),
                               send_activation_mail=False)
        check(user.id.entity_type == "USER" and user.email == email, "saved user %r" % user)
        check(user.customer_id.id == customer.id.id, "the user's customer %r" % user.customer_id)
        check(user.authority == "CUSTOMER_USER", "authority %r" % user.authority)

        link = admin.get_activation_link(user.id)
        check(isinstance(link, str) and "/api/noauth/activate?activateToken=" in link, "activation link %r" % link)
        token = link.split("activateToken=", 1)[1]
        pair = admin.activate_user(ActivateUserRequest(activate_token=token, password=PASSWORD),
                                   send_activation_mail=False)
        check(pair.token and pair.refresh_token, "activation token pair %r" % pair)
        check(status_of(lambda: admin.activate_user(ActivateUserRequest(activate_token=token, password=PASSWORD),
                                                    send_activation_mail=False)) == 400, "a token works once")

        with RestClient(env("BASE_URL")) as customer_client:
            customer_client.login(username=email, password=PASSWORD)
            for listing in (customer_client.get_user_users, customer_client.get_users):
                page = listing(page_size=10, page=0)
                check(emails(page) == [email], "%s as the customer user: %r" % (listing.__name__, emails(page)))
            everyone = emails(admin.get_users(page_size=10, page=0))
            check(email in everyone and env("USERNAME") in everyone, "get_users as the administrator %r" % everyone)
            of_customer = emails(admin.get_customer_users(customer.id, page_size=10, page=0))
            check(of_customer == [email], "get_customer_users %r" % of_customer)
            me = customer_client.get_user_by_id(user.id)
            check(me.first_name == "Py" and me.customer_id.id == customer.id.id, "get_user_by_id %r" % me)
            another = User(email="py-other-%s@example.org" % suffix, authority="CUSTOMER_USER",
                           customer_id=CustomerId(customer.id.id, "CUSTOMER"))
            check(status_of(lambda: customer_client.save_user(another, send_activation_mail=False)) == 403,
                  "a customer user creates no users")

            admin.set_user_credentials_enabled(user.id, user_credentials_enabled=False)
            check(login_status(email, PASSWORD) == 401, "a disabled user's login is refused")
            check(status_of(lambda: customer_client.get_users(page_size=10, page=0)) == 401,
                  "a disabled user's token is refused")
            admin.set_user_credentials_enabled(user.id, user_credentials_enabled=True)
            check(login_status(email, PASSWORD) == 200, "an enabled user logs in again")

        with RestClient(env("BASE_URL")) as again:
            again.login(username=email, password=PASSWORD)
            check(emails(again.get_users(page_size=10, page=0)) == [email], "logged in again")
            admin.delete_user(user.id)
            check(status_of(lambda: again.get_users(page_size=10, page=0)) == 401, "a deleted user's token is refused")
            check(login_status(email, PASSWORD) == 401, "a deleted user's login is refused")
    print("OK")


if __name__ == "__main__":
    main(run_flow)
