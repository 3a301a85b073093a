"""The console as people use it, in real Chromium (tests/browser.py): signing in and out, a wrong
password, and a first sign-in with a one-time code. Playwright's waits, never a sleep."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from routing.scope import Scope, Viewer
from tests.browser import screenshot, sign_in
from tests.console import Harness
from web.plugins import PLUGINS

NEW_PASSWORD = "browser-new-pw-1"


async def test_sign_in_see_the_navigation_and_sign_out(console: Harness, page: Page):
    who = console.logins["district_admin"]
    await page.goto("/login")
    await expect(page).to_have_title(re.compile("登录"))
    await screenshot(page, "login")
    await sign_in(page, who)
    await expect(page.locator("header .who .name")).to_have_text("周管理员")
    await expect(page.get_by_role("link", name="修改密码")).to_be_visible()
    # The navigation is every page of the plugins her role may open, in their order.
    allowed = Scope(Viewer(who.staff_id, who.staff_no, "周管理员", "district_admin",
                           console.district.district_id))
    titles = [item.title for item in sorted(
        (item for plugin in PLUGINS for item in plugin.nav if allowed.can(item.capability)),
        key=lambda item: (item.order, item.path))]
    await expect(page.locator("header.top nav a")).to_have_text(titles)
    assert "/login" not in page.url
    await screenshot(page, "home-district-admin")
    # The session works for the API the page's script calls, with the cookie the browser keeps.
    me = await page.evaluate("fetch('/api/v1/me').then(r => r.json())")
    assert me["staff_no"] == who.staff_no and "admin" in me["capabilities"]

    async with page.expect_navigation():
        await page.get_by_role("button", name="退出").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await expect(page.locator("#login-form")).to_be_visible()
    await expect(page.locator("header .who")).to_have_count(0)
    # Signed out for real: the pages send her back to sign in.
    await page.goto("/password")
    await expect(page).to_have_url(re.compile(r"/login\?next=/password$"))


async def test_a_wrong_password_shows_the_error(console: Harness, page: Page):
    who = await console.new_staff("family_doctor")
    await sign_in(page, who, password="not-my-password")
    await expect(page.get_by_role("alert")).to_have_text("工号或密码错误")
    await expect(page.locator("input[name=staff_no]")).to_have_value(who.staff_no)
    await expect(page.locator("input[name=password]")).to_have_value("")
    await screenshot(page, "login-wrong-password")
    # The form still works: the right password now signs in.
    await page.fill("input[name=password]", who.password)
    async with page.expect_navigation():
        await page.click("#login-form button[type=submit]")
    await expect(page.locator("header .who .name")).to_have_text("测试人员")


async def test_a_one_time_code_forces_a_new_password(console: Harness, page: Page):
    who = await console.new_staff("family_doctor", one_time_code=True)
    await sign_in(page, who)
    await expect(page).to_have_url(re.compile(r"/password$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("首次登录，请设置新密码")
    await expect(page.locator("header.top nav a")).to_have_count(0)  # nothing else is open
    await screenshot(page, "password-first-sign-in")
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/password$"))
    answer = await page.evaluate("fetch('/api/v1/me').then(r => r.status)")
    assert answer == 403

    # Two different entries: the page says so and nothing is set.
    await page.fill("input[name=new_password]", NEW_PASSWORD)
    await page.fill("input[name=new_password_again]", NEW_PASSWORD + "x")
    async with page.expect_navigation():
        await page.click("#password-form button[type=submit]")
    await expect(page.get_by_role("alert")).to_have_text("两次输入的新密码不一致")

    await page.fill("input[name=new_password]", NEW_PASSWORD)
    await page.fill("input[name=new_password_again]", NEW_PASSWORD)
    async with page.expect_navigation():
        await page.click("#password-form button[type=submit]")
    await expect(page).not_to_have_url(re.compile(r"/(password|login)"))
    answer = await page.evaluate("fetch('/api/v1/me').then(r => r.status)")
    assert answer == 200
    # The code is spent; the new password is the one that signs in.
    assert (await console.client().try_sign_in(who.staff_no, who.password)).status == 401
    assert (await console.client().try_sign_in(who.staff_no, NEW_PASSWORD)).status == 303
